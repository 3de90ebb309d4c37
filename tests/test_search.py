"""Full-text search, the same on both stores: SQLite's FTS5 (indexed in batches after each
round) and PostgreSQL's tsvector/GIN (queries in FTS5's syntax, translated)."""

from __future__ import annotations

import json

import pytest

from .conftest import Runner, make_entry, rss, simple_items, store_entries


@pytest.fixture
def run_cli(db_target) -> Runner:
    return Runner(db_target)


def serve(server, path, title, items):
    server.expect_request(path).respond_with_handler(
        lambda r: __import__("werkzeug").Response(rss(title, items[0]))
    )


def test_search_ranks_highlights_and_follows_updates(server, run_cli):
    items = [
        [
            {
                "title": "Volcano erupts near Grindavik",
                "guid": "1",
                "description": "Lava reached the town's edge.",
            },
            {
                "title": "Football final tonight",
                "guid": "2",
                "description": "The volcano of emotions in the stadium.",
            },
            {
                "title": "Budget vote delayed",
                "guid": "3",
                "description": "Parliament postpones the vote.",
            },
        ]
    ]
    serve(server, "/a.xml", "A", items)
    run_cli("feeds", "add", server.url_for("/a.xml"))
    hits = [
        json.loads(x)
        for x in run_cli("search", "volcano", "--format", "ndjson").stdout.splitlines()
    ]
    assert [h["title"] for h in hits] == ["Volcano erupts near Grindavik", "Football final tonight"]
    assert "**Volcano**" in hits[0]["snippet"] or "**volcano**" in hits[0]["snippet"].lower()
    assert (
        run_cli("search", '"budget vote"', "--format", "json").stdout.count("Budget vote delayed")
        == 1
    )
    assert json.loads(run_cli("search", "title:lava", "--format", "json").stdout) == []
    # an updated entry is re-indexed: old words stop matching, new ones match
    items[0][2] = {
        "title": "Budget vote passes after volcano debate",
        "guid": "3",
        "description": "x",
    }
    run_cli("update")
    titles = [
        json.loads(x)["title"]
        for x in run_cli("search", "volcano", "--format", "ndjson").stdout.splitlines()
    ]
    assert "Budget vote passes after volcano debate" in titles
    assert json.loads(run_cli("search", "postpones", "--format", "json").stdout) == []
    table = run_cli("search", "grindavik", "--format", "table").stdout
    assert "Grindavik" in table and "\x02" not in table


def test_search_by_story_and_since(server, run_cli):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(3, "Alpha")))
    run_cli("feeds", "add", server.url_for("/a.xml"))
    rows = json.loads(run_cli("search", "alpha", "--stories", "--format", "json").stdout)
    assert rows and all("sources" in r for r in rows)
    assert len({r["story_id"] for r in rows}) == len(rows)


def test_bad_query_syntax_is_one_line(run_cli):
    for q in ['"unterminated', "AND OR", "title:"]:
        res = run_cli("search", q, ok=False)
        assert res.exit_code == 1, q
        assert (
            res.stderr.startswith("error: cannot read the search") and res.stderr.count("\n") == 1
        )


def test_removed_feed_entries_leave_search(server, run_cli):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(2, "Zebra")))
    run_cli("feeds", "add", server.url_for("/a.xml"))
    assert json.loads(run_cli("search", "zebra", "--format", "json").stdout)
    run_cli("feeds", "remove", "1")
    assert json.loads(run_cli("search", "zebra", "--format", "json").stdout) == []


def test_only_the_newest_matches_are_ranked(db_target, monkeypatch):
    """A common word in a big store: only the newest RANKED_MATCHES matches are scored."""
    from datetime import UTC, datetime, timedelta

    from aggregator.store import open_store, postgres, sqlite_search

    now = datetime.now(UTC)
    store = open_store(db_target)
    f = store.add_feed("https://x.example/f", None, now)
    entries = [
        make_entry(f.id, i, now - timedelta(hours=10 - i), title=f"budget item {i}")
        for i in range(10)
    ]
    store_entries(store, f, entries, now)
    assert len(store.search("budget")) == 10
    monkeypatch.setattr(postgres if store.shared else sqlite_search, "RANKED_MATCHES", 3)
    assert sorted(h.entry.title for h in store.search("budget")) == [
        "budget item 7",
        "budget item 8",
        "budget item 9",
    ]
    assert len(store.search("item AND budget")) == 3
    assert len(store.search("title:budget NOT item")) == 0
    assert len(store.search("summary:budget")) == 0
    store.close()


def harbour_store(path, n: int, now):
    """A SQLite store at ``path`` with one feed of ``n`` entries titled "harbour <i>", written
    at ``now``, not indexed yet: (store, feed)."""
    from datetime import timedelta

    from aggregator.store import open_store

    store = open_store(path)
    f = store.add_feed("https://x.example/f", None, now)
    entries = [
        make_entry(f.id, i, now - timedelta(minutes=i), title=f"harbour {i}") for i in range(n)
    ]
    store_entries(store, f, entries, now)
    return store, f


def test_indexing_in_several_transactions_indexes_everything_once(tmp_path, monkeypatch):
    """SQLite indexes a round in transactions of INDEX_TRANSACTION entries (another writer waits
    at most one of them); every entry is found, once, and the mark moves only at the end."""
    import sqlite3
    from datetime import UTC, datetime

    from aggregator.store import sqlite_search

    monkeypatch.setattr(sqlite_search, "INDEX_TRANSACTION", 7)
    store, _ = harbour_store(tmp_path / "s.sqlite", 40, datetime.now(UTC))
    assert store.index_pending() == 40
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("SELECT count(*) FROM entries_fts_docsize").fetchone()[0] == 40
        db.execute("INSERT INTO entries_fts (entries_fts) VALUES ('integrity-check')")
    assert len(store.search("harbour")) == 40
    store.close()


def test_the_last_second_is_looked_at_again_but_not_indexed_again(tmp_path):
    """The newest second indexed is looked at again by the next run (another process may
    still write in it), but only what changed in it is indexed again: a big round's last
    second was indexed again by every quiet round after it (0.45 s each at 1,000 feeds)."""
    from datetime import UTC, datetime, timedelta

    from aggregator.store import open_store

    now = datetime.now(UTC).replace(microsecond=0)
    store, f = harbour_store(tmp_path / "s.sqlite", 30, now)
    assert store.index_pending() == 30
    assert store.index_pending() == 0  # the same second, unchanged: nothing to do (was 30)

    # another connection (another process) updates an entry within that same second
    other = open_store(tmp_path / "s.sqlite")
    changed = make_entry(
        f.id, 7, now - timedelta(minutes=7), title="lighthouse 7", content_hash="7b"
    )
    store_entries(other, f, [changed], now)
    other.close()
    assert store.index_pending() == 1
    assert [h.entry.title for h in store.search("lighthouse")] == ["lighthouse 7"]
    assert len(store.search("harbour")) == 29
    store.close()


def fts_consistent(store) -> int:
    """The number of entries in SQLite's full-text index, after FTS5's own check that the
    index holds exactly the words of those entries as ``entries`` has them now (it raises
    "database disk image is malformed" otherwise)."""
    store.db.execute("INSERT INTO entries_fts (entries_fts) VALUES ('integrity-check')")
    return store.db.execute("SELECT count(*) FROM entries_fts_docsize").fetchone()[0]


def test_the_index_follows_changed_and_deleted_entries(tmp_path):
    """The index reads its text from ``entries``: an entry whose title changes, or that is
    deleted (retention, a removed feed's cascade), leaves it with the words it was indexed
    with, and a changed one comes back with its new ones. Indexed with the wrong words (or
    twice), FTS5's integrity check fails and searches find what is gone."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(microsecond=0)
    store, f = harbour_store(tmp_path / "s.sqlite", 20, now)
    assert fts_consistent(store) == 0
    assert store.index_pending() == 20 and fts_consistent(store) == 20
    assert store.index_pending() == 0  # (the same second, looked at again: nothing new)

    # entry 3 changes after it was indexed; entry 4 is written, then changes, before indexing
    later = now + timedelta(seconds=5)
    store_entries(
        store,
        f,
        [make_entry(f.id, 3, now - timedelta(minutes=3), title="lighthouse 3", content_hash="x")],
        later,
    )
    assert fts_consistent(store) == 19  # out of the index, with the words it had
    assert [h.entry.title for h in store.search("lighthouse")] == ["lighthouse 3"]  # (indexed)
    assert fts_consistent(store) == 20 and len(store.search("harbour")) == 19
    extra = make_entry(f.id, 40, now, title="ferry 40")
    store_entries(store, f, [extra], later)
    store_entries(store, f, [make_entry(f.id, 40, now, title="quay 40", content_hash="y")], later)
    assert store.index_pending() == 1 and fts_consistent(store) == 21
    assert store.search("ferry") == [] and len(store.search("quay")) == 1

    # retention deletes the oldest entries; then the feed goes, and its entries with it
    assert store.remove_older_than(now - timedelta(minutes=14, seconds=30))[0] == 5
    assert fts_consistent(store) == 16 and len(store.search("harbour")) == 14
    g = store.add_feed("https://y.example/g", None, now)
    store_entries(store, g, [make_entry(g.id, 1, now, title="harbour elsewhere")], later)
    assert store.index_pending() == 1
    store.remove_feed(f.id)
    assert fts_consistent(store) == 1
    assert [h.entry.title for h in store.search("harbour")] == ["harbour elsewhere"]
    store.close()


def test_a_store_indexed_with_a_copy_of_the_text_is_indexed_again_without_it(tmp_path):
    """Migration 9 replaces the index that kept its own copy of every title and summary (as
    migrations 4 and 7 made it) with one that reads them from ``entries``; the next indexing
    run puts every entry back, and search finds them as before."""
    import sqlite3
    from datetime import UTC, datetime

    from aggregator.store import open_store

    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path / "old.sqlite"
    store, _ = harbour_store(path, 12, now)
    store.close()
    with sqlite3.connect(path) as db:  # the store as version 8 left it, indexed
        db.executescript(
            """
            DROP TRIGGER entries_fts_changed;
            DROP TRIGGER entries_fts_deleted;
            DROP TABLE entries_fts;
            CREATE VIRTUAL TABLE entries_fts USING fts5(
                title, summary, tokenize = 'unicode61 remove_diacritics 2');
            INSERT INTO entries_fts (entries_fts, rank) VALUES ('automerge', 16);
            INSERT INTO entries_fts (rowid, title, summary) SELECT id, title, summary FROM entries;
            DELETE FROM schema_migrations WHERE version = 9;
            """
        )
        # half the entries written an hour before the others, and the index up to date
        db.execute("UPDATE entries SET last_changed = last_changed - 3600 WHERE id % 2 = 0")
        db.execute(
            "UPDATE meta SET value = (SELECT max(last_changed) FROM entries)"
            " WHERE key = 'fts_indexed_through'"
        )
    store = open_store(path)
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert "entries_fts_content" not in tables and "entries_fts_changed" in tables
    assert fts_consistent(store) == 0
    assert len(store.search("harbour")) == 12  # (a search indexes first)
    assert fts_consistent(store) == 12
    automerge = "SELECT v FROM entries_fts_config WHERE k = 'automerge'"
    assert store.db.execute(automerge).fetchone()[0] == 16
    store.close()


def test_an_indexing_run_that_pauses_goes_on_where_it_stopped(tmp_path, monkeypatch):
    """``index_pending(pause)`` commits what it indexed and stops when ``pause`` says so (a
    round's worker lets other tasks go first); the next call goes on, and the mark moves only
    once all are in: another process meanwhile sees the rest as still to index."""
    from datetime import UTC, datetime

    from aggregator.store import open_store, sqlite_search

    monkeypatch.setattr(sqlite_search, "INDEX_TRANSACTION", 700)  # (chunks of 500, then 200)
    now = datetime.now(UTC).replace(microsecond=0)
    store, _ = harbour_store(tmp_path / "s.sqlite", 1800, now)
    asked = []
    assert store.index_pending(lambda: asked.append(1) or len(asked) == 2) is None
    assert fts_consistent(store) == 700  # two chunks in, committed
    other = open_store(tmp_path / "s.sqlite")
    assert other.get_meta("fts_indexed_through") == "0"  # (the mark has not moved)
    other.close()
    assert store.index_pending(lambda: False) == 1100
    assert fts_consistent(store) == 1800 and store.index_pending() == 0
    assert len(store.search("harbour", limit=5000)) == 1800
    store.close()


def test_search_by_story_finds_stories_past_one_big_storys_matches(db_target):
    """``--stories``: one hit per story, its best one, even when a single story holds many
    more of the best matches than are asked for (each story is picked from all the ranked
    matches, not from the top ``limit`` x 20 hits)."""
    from datetime import UTC, datetime, timedelta

    from aggregator.api import Aggregator
    from aggregator.config import Settings
    from aggregator.store import open_store

    now = datetime.now(UTC)
    store = open_store(db_target)
    try:
        f = store.add_feed("https://x.example/f", None, now)
        big = [  # the word in the title: each ranks above the small story's entries
            make_entry(f.id, i, now - timedelta(minutes=i), title=f"Volcano erupts, update {i}")
            for i in range(45)
        ]
        small = [  # the word in the summary only; the older of the two matches it once
            make_entry(
                f.id, 100, now - timedelta(days=2), title="Airport shut", summary="ash from volcano"
            ),
            make_entry(
                f.id,
                101,
                now - timedelta(hours=1),
                title="Airport shut",
                summary="a volcano cloud, volcano ash",
            ),
        ]
        loose = make_entry(f.id, 200, now, title="Volcano volcano volcano")  # no story yet
        store_entries(store, f, [*big, *small, loose], now)
        ids = {e.key: e.id for e in store.entries(limit=1000)}
        store.apply_clustering(
            [(ids[f"g:{i}"], 1, 1.0, "new") for i in range(45)]
            + [(ids["g:100"], 2, 1.0, "new"), (ids["g:101"], 2, 1.0, "new")],
            [],
            now,
        )
        hits = store.search("volcano", limit=2, per_story=True)
        assert [h.entry.story_id for h in hits] == [1, 2]
        assert hits[0].rank <= hits[1].rank
        # each story's best entry: the big story's newest of its equals, the small story's
        # entry with the word twice
        assert hits[0].entry.id == ids["g:0"] and hits[1].entry.id == ids["g:101"]
        assert "volcano" in hits[1].snippet.lower()
        assert [h.entry.story_id for h in store.search("volcano", limit=1, per_story=True)] == [1]
        assert [h.entry.story_id for h in store.search("ash", limit=5, per_story=True)] == [2]
        since = now - timedelta(days=1)
        got = store.search("ash", since=since, limit=5, per_story=True)
        assert [h.entry.id for h in got] == [ids["g:101"]]
        # the API's stories: each with its hit, in the same order
        agg = Aggregator(store, Settings())
        assert [(s.id, h.entry.id) for s, h in agg.search("volcano", limit=5, stories=True)] == [
            (1, ids["g:0"]),
            (2, ids["g:101"]),
        ]
        # without per_story: the best matches whatever their story, the loose one first
        assert store.search("volcano", limit=3)[0].entry.id == ids["g:200"]
    finally:
        store.close()
