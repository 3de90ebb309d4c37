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
        assert db.execute("SELECT count(*) FROM entries_fts").fetchone()[0] == 40
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
