"""The store contract on both backends (a SQLite file, a PostgreSQL schema), and what is
SQLite's own (WAL, files) on real files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from aggregator.errors import FeedExistsError, FeedNotFoundError, StoreError
from aggregator.models import Entry, FetchResult, Outcome, ParsedFeed
from aggregator.store import SQLiteStore, open_store
from aggregator.store.migrations import MIGRATIONS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def entry(feed_id: int, i: int, title: str | None = None) -> Entry:
    return Entry(
        feed_id=feed_id,
        key=f"g:{i}",
        guid=str(i),
        url=f"https://x.example/{i}",
        link=f"https://x.example/{i}",
        title=title or f"Title {i}",
        summary="s",
        summary_html="<p>s</p>",
        author=None,
        published=NOW - timedelta(minutes=i),
        updated=None,
        content_hash=f"h-{title or i}",
    )


def ok(feed_id: int, url: str = "https://x.example/feed", **kw) -> FetchResult:
    return FetchResult(feed_id=feed_id, outcome=Outcome.OK, url=url, status_code=200, **kw)


PARSED = ParsedFeed(format="rss20", title="X", link="https://x.example/", entries=())


@pytest.fixture
def store(db_target):
    s = open_store(db_target)
    yield s
    s.close()


def test_wal_foreign_keys_and_migrations_recorded(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # checkpoints every 32 MB of WAL, not SQLite's 4 MB (bench: 5,000-feed round's fetch phase)
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 8192
    assert store.db.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 * 1024 * 1024
    assert store.schema_version() == max(v for v, _, _ in MIGRATIONS)
    indexes = {
        r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'entries'")
    }
    assert "entries_url" not in indexes  # (migration 11: no query read it)
    assert {"entries_published", "entries_queue", "entries_story"} <= indexes


def test_a_bulk_connection_keeps_more_of_the_store_in_memory(tmp_path):
    """A round's worker opens the store in bulk (it writes and reads much of a round): a page
    cache of BULK_CACHE_KIB, where every other connection keeps SQLite's default."""
    from aggregator.store.sqlite import BULK_CACHE_KIB

    plain = open_store(tmp_path / "s.sqlite")
    bulk = open_store(tmp_path / "s.sqlite", bulk=True)
    assert bulk.db.execute("PRAGMA cache_size").fetchone()[0] == -BULK_CACHE_KIB
    default = sqlite3.connect(":memory:").execute("PRAGMA cache_size").fetchone()[0]
    assert plain.db.execute("PRAGMA cache_size").fetchone()[0] == default != -BULK_CACHE_KIB
    plain.close()
    bulk.close()


def test_reopening_applies_nothing_twice(tmp_path):
    SQLiteStore(tmp_path / "s.sqlite").close()
    s = SQLiteStore(tmp_path / "s.sqlite")
    rows = s.db.execute("SELECT version FROM schema_migrations").fetchall()
    assert len(rows) == len(MIGRATIONS)
    s.close()


def test_full_text_index_merges_sixteen_segments_at_a_time(tmp_path):
    """Migration 7 sets FTS5's automerge to 16 (4 is FTS5's default): indexing a round merges
    less. A store from before it gets the setting when it is opened."""
    automerge = "SELECT v FROM entries_fts_config WHERE k = 'automerge'"
    s = SQLiteStore(tmp_path / "s.sqlite")
    assert s.db.execute(automerge).fetchone()[0] == 16
    s.db.execute("DELETE FROM entries_fts_config WHERE k = 'automerge'")  # (FTS5's default)
    s.db.execute("DELETE FROM schema_migrations WHERE version = 7")
    s.db.commit()
    s.close()
    s = SQLiteStore(tmp_path / "s.sqlite")
    assert s.db.execute(automerge).fetchone()[0] == 16
    s.close()


def test_a_storys_aggregates_are_read_from_the_index_alone(tmp_path):
    """Migration 10 makes the index of entries by story carry the members' times, ids and
    feeds: refreshing a story's counts and span reads it alone, not each member's wide row. A
    store from before it gets the index when it is opened."""
    aggregates = (
        "EXPLAIN QUERY PLAN SELECT count(*), count(DISTINCT feed_id), min(published),"
        " max(published) FROM entries WHERE story_id = ?"
    )

    def covered(s) -> bool:
        return any("COVERING INDEX entries_story" in r[3] for r in s.db.execute(aggregates, (1,)))

    s = SQLiteStore(tmp_path / "s.sqlite")
    assert covered(s)
    s.db.execute("DROP INDEX entries_story")  # as migration 1 made it
    s.db.execute("CREATE INDEX entries_story ON entries (story_id) WHERE story_id IS NOT NULL")
    s.db.execute("DELETE FROM schema_migrations WHERE version = 10")
    s.db.commit()
    assert not covered(s)
    s.close()
    s = SQLiteStore(tmp_path / "s.sqlite")
    assert covered(s)
    s.close()


def _index_sql(s) -> str | None:
    row = s.db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'entries_published'"
    ).fetchone()
    return row[0] if row else None


def test_a_first_load_builds_the_index_of_entries_by_time_at_its_end(tmp_path):
    """``defer_indexes`` drops the index of entries by time while the store holds no entry
    (a first round writes every entry at a random place in it), ``restore_indexes`` builds
    it again as the schema has it; a store with entries keeps it."""
    s = SQLiteStore(tmp_path / "s.sqlite")
    schema = _index_sql(s)
    assert schema is not None and "published DESC, id DESC" in schema
    assert s.defer_indexes() is True
    assert _index_sql(s) is None
    fid = s.add_feed("https://x.example/feed", None, NOW).id
    s.write_feed_result(ok(fid), PARSED, [entry(fid, i) for i in range(3)], None, NOW)
    # a query meanwhile answers from the table
    assert [e.title for e in s.entries(limit=2)] == ["Title 0", "Title 1"]
    s.restore_indexes()
    plan = s.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM entries ORDER BY published DESC, id DESC LIMIT 5"
    ).fetchall()
    assert any("entries_published" in r[3] for r in plan), plan
    assert _index_sql(s).replace(" IF NOT EXISTS", "") == schema
    s.restore_indexes()  # (nothing to do: built)
    assert s.defer_indexes() is False  # entries in it: kept
    assert _index_sql(s) is not None
    s.close()


def test_a_round_on_a_store_with_entries_takes_no_write_lock_for_its_indexes(tmp_path):
    """Every round asks: a store with entries, and its index there, are told by reads, so a
    round does not wait for another process's write (nor time out behind it) for this."""
    s = SQLiteStore(tmp_path / "s.sqlite")
    fid = s.add_feed("https://x.example/feed", None, NOW).id
    s.write_feed_result(ok(fid), PARSED, [entry(fid, 1)], None, NOW)
    other = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        s.db.execute("PRAGMA busy_timeout = 100")  # (were a lock asked for: refused at once)
        assert s.defer_indexes() is False
        s.restore_indexes()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _index_sql(s) is not None
    s.close()


@pytest.mark.postgres
def test_a_shared_store_defers_no_index(pg_url):
    """Other workers write and read a PostgreSQL store meanwhile: it keeps its indexes."""
    s = open_store(pg_url)
    assert s.defer_indexes() is False
    s.restore_indexes()
    s.close()


def test_migrations_do_not_zero_the_pages_they_free(tmp_path):
    """SQLite built with secure_delete on (Debian's) zeroes every page a DROP TABLE frees, and
    holds them all in memory until the commit: migration 9's drop of the full-text index's
    copy of the text took 597 MB of RSS on a 1,000,000-entry store. Migrations run with
    secure_delete FAST (freed pages left as they are); the connection's setting comes back
    after them."""
    import sqlite3

    path = tmp_path / "s.sqlite"
    s = SQLiteStore(path)
    before = s.db.execute("PRAGMA secure_delete").fetchone()[0]
    s.close()
    with sqlite3.connect(path) as db:  # version 8's full-text table, with a text of its own
        db.executescript(
            """
            DROP TRIGGER entries_fts_changed;
            DROP TRIGGER entries_fts_deleted;
            DROP TABLE entries_fts;
            CREATE VIRTUAL TABLE entries_fts USING fts5(title, summary);
            DELETE FROM schema_migrations WHERE version >= 9;
            """
        )
        db.executemany(
            "INSERT INTO entries_fts (rowid, title, summary) VALUES (?, ?, ?)",
            [(i, f"qqmarkerqq {i}", "x" * 2000) for i in range(50)],
        )
    s = SQLiteStore(path)
    assert s.db.execute("PRAGMA secure_delete").fetchone()[0] == before
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    assert b"qqmarkerqq" in path.read_bytes()  # the dropped table's pages, not zeroed


def test_newer_store_is_refused(tmp_path):
    s = SQLiteStore(tmp_path / "s.sqlite")
    s.db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    s.close()
    with pytest.raises(StoreError, match="newer aggregator"):
        SQLiteStore(tmp_path / "s.sqlite")


def test_unwritable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        open_store(blocker / "sub" / "s.sqlite")


def test_not_a_database_is_a_store_error(tmp_path):
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        open_store(p)


def test_add_get_remove_feed(store):
    f = store.add_feed("https://x.example/feed", "Mine", NOW)
    assert store.get_feed(f.id).url == "https://x.example/feed"
    assert store.get_feed("https://x.example/feed").user_title == "Mine"
    with pytest.raises(FeedExistsError):
        store.add_feed("https://x.example/feed", None, NOW)
    store.remove_feed(f.id)
    with pytest.raises(FeedNotFoundError):
        store.get_feed(f.id)


def test_entries_inserted_then_updated_not_duplicated(store):
    f = store.add_feed("https://x.example/feed", None, NOW)
    w = store.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1), entry(f.id, 2)], None, NOW)
    assert (w.new, w.updated) == (2, 0)
    w = store.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1), entry(f.id, 2)], None, NOW)
    assert (w.new, w.updated) == (0, 0)
    w = store.write_feed_result(
        ok(f.id), PARSED, [entry(f.id, 1, "Changed"), entry(f.id, 3)], None, NOW
    )
    assert (w.new, w.updated) == (1, 1)
    rows = store.entries(limit=10)
    assert len(rows) == 3
    assert {r.title for r in rows} == {"Changed", "Title 2", "Title 3"}


def test_the_store_keeps_an_entrys_text_not_its_html(store):
    """No query, export or page reads an entry's HTML summary, and it was a third of the
    store: only the text is kept. An entry an older version stored with its HTML loses it
    when it changes."""
    html = "SELECT id FROM entries WHERE summary_html IS NOT NULL ORDER BY id"
    f = store.add_feed("https://x.example/feed", None, NOW)
    store.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1), entry(f.id, 2)], None, NOW)
    assert store.db.execute(html).fetchall() == []
    assert {r.summary for r in store.entries(limit=10)} == {"s"}
    ids = [r[0] for r in store.db.execute("SELECT id FROM entries ORDER BY id").fetchall()]
    store.db.execute("UPDATE entries SET summary_html = '<p>old</p>'")  # (an older version's)
    getattr(store.db, "commit", lambda: None)()  # (PostgreSQL's commits by itself)
    w = store.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1, "Changed")], None, NOW)
    assert w.updated == 1
    assert [r[0] for r in store.db.execute(html).fetchall()] == ids[1:]


def test_feed_removal_cascades_to_entries(store):
    f = store.add_feed("https://x.example/feed", None, NOW)
    store.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1)], None, NOW)
    store.remove_feed(f.id)
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_failed_write_leaves_nothing_of_that_feed(store):
    """One feed's write is one transaction: an error midway rolls all of it back."""
    f = store.add_feed("https://x.example/feed", None, NOW)

    def entries():
        yield entry(f.id, 1)
        yield entry(f.id, 2)
        raise RuntimeError("crash in the middle of a feed")

    with pytest.raises(RuntimeError):
        store.write_feed_result(ok(f.id, etag='"new"'), PARSED, entries(), None, NOW)
    assert store.entries() == []
    assert store.get_feed(f.id).etag is None
    assert store.get_feed(f.id).last_status is None


def test_a_failed_write_in_a_batch_is_undone_alone(store, db_target):
    """``batch`` (a round's 304s and errors, written together): a write that fails in it takes
    back only itself; the others are stored. On SQLite they are one transaction, each write a
    savepoint: another connection sees none of them before the batch ends."""
    a = store.add_feed("https://a.example/feed", None, NOW)
    b = store.add_feed("https://b.example/feed", None, NOW)
    other = open_store(db_target)
    sqlite = isinstance(store, SQLiteStore)

    def broken():
        yield entry(b.id, 1)
        raise RuntimeError("crash in the middle of a feed")

    try:
        with store.batch():
            store.write_feed_result(ok(a.id, etag='"a"'), PARSED, [entry(a.id, 1)], None, NOW)
            with pytest.raises(RuntimeError):
                store.write_feed_result(ok(b.id, etag='"b"'), PARSED, broken(), None, NOW)
            store.set_schedule(a.id, NOW + timedelta(hours=1), "test", None, NOW)
            with store.batch():  # nested: part of the same batch
                store.write_feed_result(ok(b.id, etag='"b2"'), PARSED, [], None, NOW)
            assert other.get_feed(a.id).etag == (None if sqlite else '"a"')
        assert other.get_feed(a.id).etag == '"a"'
        assert other.get_feed(a.id).next_check_at == NOW + timedelta(hours=1)
        assert other.get_feed(b.id).etag == '"b2"'
        assert [e.feed_id for e in other.entries()] == [a.id]  # b's entry was undone
        store.write_feed_result(ok(a.id, etag='"a3"'), PARSED, [], None, NOW)  # and usable
        assert other.get_feed(a.id).etag == '"a3"'
    finally:
        other.close()


def test_a_failed_sqlite_batch_is_rolled_back_whole(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    a = store.add_feed("https://a.example/feed", None, NOW)
    with pytest.raises(RuntimeError), store.batch():
        store.write_feed_result(ok(a.id, etag='"a"'), PARSED, [entry(a.id, 1)], None, NOW)
        raise RuntimeError("the batch itself fails")
    assert store.get_feed(a.id).etag is None and store.entries() == []
    store.write_feed_result(ok(a.id, etag='"a2"'), PARSED, [], None, NOW)
    assert store.get_feed(a.id).etag == '"a2"'
    store.close()


@pytest.mark.parametrize("batched", [False, True])
def test_a_full_disk_is_a_store_error_that_says_so(tmp_path, batched):
    """SQLite rolls a transaction back itself when the disk is full (here: the file may not
    grow, ``max_page_count``). Undoing it again failed with "cannot rollback - no transaction
    is active" (or "no such savepoint"), which hid the reason; now the reason is the error, a
    StoreError, and nothing of the failed write is left."""
    store = SQLiteStore(tmp_path / "s.sqlite")
    f = store.add_feed("https://x.example/feed", None, NOW)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    big = [replace(entry(f.id, i), summary="s" * 5000) for i in range(20)]
    with pytest.raises(StoreError, match="database or disk is full"):
        if batched:
            with store.batch():
                store.write_feed_result(ok(f.id, etag='"e"'), PARSED, big, None, NOW)
        else:
            store.write_feed_result(ok(f.id, etag='"e"'), PARSED, big, None, NOW)
    assert not store.db.in_transaction
    assert store.entries() == [] and store.get_feed(f.id).etag is None
    store.db.execute("PRAGMA max_page_count = 1073741823")  # space again: the store goes on
    store.write_feed_result(ok(f.id, etag='"e"'), PARSED, big[:1], None, NOW)
    assert len(store.entries()) == 1
    store.close()


def test_a_store_another_process_is_writing_says_so(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    f = store.add_feed("https://x.example/feed", None, NOW)
    other = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    store.db.execute("PRAGMA busy_timeout = 0")  # (not the 10 s a store waits for it)
    with pytest.raises(StoreError, match="database is locked; another process is writing it"):
        store.write_feed_result(ok(f.id, etag='"e"'), PARSED, [], None, NOW)
    other.execute("ROLLBACK")
    store.write_feed_result(ok(f.id, etag='"e"'), PARSED, [], None, NOW)
    assert store.get_feed(f.id).etag == '"e"'
    other.close()
    store.close()


def test_feed_state_is_recorded(store):
    f = store.add_feed("https://x.example/feed", None, NOW)
    store.write_feed_result(
        ok(f.id, etag='"1"', last_modified="lm", body_hash="h"), PARSED, [], None, NOW
    )
    got = store.get_feed(f.id)
    assert (got.etag, got.last_modified, got.body_hash, got.last_status, got.title) == (
        '"1"',
        "lm",
        "h",
        "ok",
        "X",
    )
    fail = FetchResult(feed_id=f.id, outcome=Outcome.TIMEOUT, url=f.url, error="timed out")
    store.write_feed_result(fail, None, [], None, NOW + timedelta(hours=1))
    got = store.get_feed(f.id)
    assert got.last_status == "timeout" and got.last_error == "timed out"
    assert got.etag == '"1"'  # validators survive a failure
    assert got.last_ok_at == NOW


def test_permanent_redirect_moves_url_and_remembers_old(store):
    f = store.add_feed("https://x.example/old", None, NOW)
    store.write_feed_result(
        ok(f.id, url="https://x.example/new", permanent_url="https://x.example/new"),
        PARSED,
        [],
        None,
        NOW,
    )
    got = store.get_feed(f.id)
    assert got.url == "https://x.example/new"
    assert got.previous_urls == ("https://x.example/old",)
    assert store.get_feed("https://x.example/old").id == f.id


def test_permanent_redirect_onto_another_feed_keeps_url(store):
    a = store.add_feed("https://x.example/a", None, NOW)
    store.add_feed("https://x.example/b", None, NOW)
    store.write_feed_result(
        ok(a.id, url="https://x.example/b", permanent_url="https://x.example/b"),
        PARSED,
        [],
        None,
        NOW,
    )
    assert store.get_feed(a.id).url == "https://x.example/a"


def test_gone_feed_is_not_requested_again(store):
    f = store.add_feed("https://x.example/feed", None, NOW)
    gone = FetchResult(feed_id=f.id, outcome=Outcome.GONE, url=f.url, status_code=410, error="gone")
    store.write_feed_result(gone, None, [], None, NOW)
    assert store.get_feed(f.id).gone
    assert store.fetch_requests() == []


def test_entries_query_filters(store):
    a = store.add_feed("https://x.example/a", None, NOW)
    b = store.add_feed("https://x.example/b", None, NOW)
    store.write_feed_result(ok(a.id), PARSED, [entry(a.id, i) for i in range(5)], None, NOW)
    store.write_feed_result(
        ok(b.id, url="https://x.example/b"),
        PARSED,
        [replace(entry(b.id, i), key=f"g:b{i}") for i in range(5)],
        None,
        NOW,
    )
    assert len(store.entries(limit=100)) == 10
    assert len(store.entries(limit=3)) == 3
    assert {e.feed_id for e in store.entries(feed_ids=[b.id])} == {b.id}
    recent = store.entries(since=NOW - timedelta(minutes=2, seconds=30))
    assert len(recent) == 6  # minutes 0, 1, 2 from each feed
    assert [e.published for e in recent] == sorted((e.published for e in recent), reverse=True)


def test_reader_sees_committed_data_while_writer_holds_transaction(tmp_path):
    path = tmp_path / "s.sqlite"
    writer = SQLiteStore(path)
    f = writer.add_feed("https://x.example/feed", None, NOW)
    writer.write_feed_result(ok(f.id), PARSED, [entry(f.id, 1)], None, NOW)
    writer.db.execute("BEGIN IMMEDIATE")
    writer.db.execute("DELETE FROM entries")
    reader = sqlite3.connect(path, timeout=0.1)
    assert reader.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
    writer.db.execute("ROLLBACK")
    reader.close()
    writer.close()


def test_clustered_since_reads_the_window_in_chunks_in_clustering_order(store):
    f = store.add_feed("https://x.example/feed", None, NOW)
    # seven entries, three of them at the same instant: chunk borders fall inside the tie
    entries = [replace(entry(f.id, i), published=NOW - timedelta(minutes=i // 3)) for i in range(7)]
    entries.append(replace(entry(f.id, 99), published=NOW - timedelta(days=30)))  # too old
    store.write_feed_result(ok(f.id), PARSED, entries, None, NOW)
    pending = store.unclustered()
    assert len(pending) == 8
    store.apply_clustering(
        [(p.entry_id, 1000 + p.entry_id, 1.0, "new") for p in pending],
        [],
        NOW,
        store.cluster_generation(),
    )
    since = NOW - timedelta(days=1)
    whole = list(store.clustered_since(since, chunk=100))
    assert len(whole) == 7
    assert [(e.published, e.entry_id) for e in whole] == sorted(
        (e.published, e.entry_id) for e in whole
    )
    for chunk in (1, 2, 3, 7):
        assert list(store.clustered_since(since, chunk=chunk)) == whole


def test_writing_assignments_creates_grows_merges_and_skips_stories(store):
    """One write per story row: a new story is created with its aggregates (made now), a
    story that grows keeps when it was made, a story merged into another in the same write is
    gone, and a story whose only entry another process placed first gets no row."""
    f = store.add_feed("https://x.example/feed", None, NOW)
    entries = [entry(f.id, i) for i in range(6)]  # Title i, published i minutes ago
    store.write_feed_result(ok(f.id), PARSED, entries, None, NOW)
    ids = {item.title: item.entry_id for item in store.unclustered()}
    gen = store.cluster_generation()
    store.apply_clustering(
        [(ids["Title 2"], 10, 0.9, "new"), (ids["Title 4"], 10, 0.5, "joined")], [], NOW, gen
    )
    later = NOW + timedelta(hours=1)
    store.apply_clustering(
        [
            (ids["Title 1"], 10, 0.4, "joined"),  # story 10 grows
            (ids["Title 0"], 11, 1.0, "new"),  # story 11, new
            (ids["Title 5"], 12, 1.0, "new"),  # story 12, new, merged into 10 below
            (ids["Title 2"], 13, 1.0, "new"),  # already placed: story 13 never has an entry
        ],
        [(12, 10)],
        later,
        gen,
    )
    rows = store.db.execute(
        "SELECT id, created_at, entry_count, source_count, first_seen, last_updated,"
        " rep_entry_id, title FROM stories ORDER BY id"
    ).fetchall()
    ts = int(NOW.timestamp())
    assert [tuple(r) for r in rows] == [
        (10, ts, 4, 1, ts - 5 * 60, ts - 60, ids["Title 5"], "Title 5"),
        (11, ts + 3600, 1, 1, ts, ts, ids["Title 0"], "Title 0"),
    ]


def test_the_queue_gives_ids_in_clustering_order_and_items_in_the_order_asked(store):
    """``unclustered_ids``: the entries without a story, by (published, feed, id), whatever order
    they were written in; ``unclustered_items``: those of the ids given that are still without
    a story, in the order given (the clustering stage reads its batches so)."""
    f = store.add_feed("https://x.example/feed", None, NOW)
    minutes_ago = [5, 1, 3, 1, 9, 0]  # written in this order; two at the same minute
    entries = [
        replace(entry(f.id, i), published=NOW - timedelta(minutes=m))
        for i, m in enumerate(minutes_ago)
    ]
    store.write_feed_result(ok(f.id), PARSED, entries, None, NOW)
    ids = list(store.unclustered_ids())
    titles = [item.title for item in store.unclustered_items(ids)]
    # oldest first; of the two at the same minute, the one written first (the lower id)
    assert titles == ["Title 4", "Title 0", "Title 2", "Title 1", "Title 3", "Title 5"]
    placed, kept = ids[0], ids[1:]
    store.apply_clustering([(placed, 1, 1.0, "new")], [], NOW, store.cluster_generation())
    asked = [ids[3], placed, ids[1], ids[5], 10**9]  # one placed meanwhile, one never written
    assert [i.entry_id for i in store.unclustered_items(asked)] == [ids[3], ids[1], ids[5]]
    assert list(store.unclustered_ids()) == kept


def test_the_queue_order_does_not_depend_on_which_feed_came_in_first(store):
    """Entries published at the same time are ordered by their feed, then as their feed lists
    them: not by the order their feeds' fetches happened to end in (which gives the ids), so
    that the same entries make the same stories in every run."""
    first, second = (store.add_feed(f"https://{n}.example/feed", None, NOW) for n in "ab")
    at = NOW - timedelta(minutes=5)

    def told(feed, n: int) -> list[Entry]:
        return [replace(entry(feed.id, n + i), published=at) for i in range(3)]

    # the feed added second comes in first; then the other, with one older entry
    store.write_feed_result(ok(second.id), PARSED, told(second, 10), None, NOW)
    older = replace(entry(first.id, 99), published=at - timedelta(minutes=1))
    store.write_feed_result(ok(first.id), PARSED, [*told(first, 20), older], None, NOW)
    items = store.unclustered_items(store.unclustered_ids())
    assert [i.title for i in items] == [
        "Title 99",
        *(f"Title {20 + i}" for i in range(3)),
        *(f"Title {10 + i}" for i in range(3)),
    ]


def test_sqlite_queue_of_entries_without_a_story_is_indexed_in_writing_order(tmp_path):
    """Its index starts with the entry id (entries are written in id order: each insert lands at
    the index's end), and reading the queue in clustering order goes through it: SQLite's
    planner, left to itself, walked every entry in published order, placed or not, to find the
    few that are not (SQLite's VM steps, counted by a progress handler)."""
    from aggregator.store.sql import SQLStore

    s = SQLiteStore(tmp_path / "s.sqlite")
    columns = [r[2] for r in s.db.execute("PRAGMA index_info(entries_queue)")]
    assert columns == ["id", "published", "feed_id"]  # (all the queue's order reads)
    old = "SELECT count(*) FROM sqlite_master WHERE name = 'entries_unclustered'"
    assert s.db.execute(old).fetchone()[0] == 0
    f = s.add_feed("https://x.example/feed", None, NOW)
    s.write_feed_result(ok(f.id), PARSED, [entry(f.id, i) for i in range(300)], None, NOW)
    ids = list(s.unclustered_ids())
    placed = [(i, 1, 1.0, "new") for i in ids[:297]]
    s.apply_clustering(placed, [], NOW, s.cluster_generation())

    def steps(read) -> tuple[int, list[int]]:
        count: list[int] = []
        s.db.set_progress_handler(lambda: count.append(1), 10)
        try:
            got = list(read(s))
        finally:
            s.db.set_progress_handler(None, 10)
        return len(count), got

    ours = steps(SQLiteStore.unclustered_ids)
    s._QUEUE_INDEX = SQLStore._QUEUE_INDEX  # (the planner's own choice)
    theirs = steps(SQLiteStore.unclustered_ids)
    assert ours[1] == theirs[1] == ids[297:]
    assert ours[0] <= 10 and theirs[0] >= 100, (ours[0], theirs[0])  # (4 and 121 here)
    s.close()
