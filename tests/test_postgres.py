"""What PostgreSQL adds: leases between workers, one clustering worker at a time, concurrent
ingestion, and the SQLite -> PostgreSQL migration. (The store contract itself runs on both
backends in test_store, test_pipeline, test_stories and test_search.)"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.api import Aggregator
from aggregator.config import FetchSettings, Settings
from aggregator.errors import ClusterConflictError
from aggregator.store import PostgresStore, open_store

from .conftest import Runner, make_entry, rss, store_entries

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FAST = Settings(fetch=FetchSettings(connect_timeout=2, read_timeout=2, total_timeout=4))


def feeds(store, n):
    return [store.add_feed(f"https://x.example/{i}", None, NOW).id for i in range(n)]


def test_two_workers_never_hold_the_same_feed(pg_url):
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    ids = feeds(a, 50)
    got: dict[str, list[int]] = {"a": [], "b": []}

    def claim(store, name):
        after = 0
        while batch := store.claim_feeds(name, NOW, 3, 60, after):
            got[name] += [r.feed_id for r in batch]
            after = batch[-1].feed_id

    threads = [threading.Thread(target=claim, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == ids
    # leased: nobody gets them again until the lease ends ...
    assert a.claim_feeds("c", NOW + timedelta(seconds=59), 100, 60) == []
    # ... then anyone may (a worker that died leaves its feeds to the others)
    assert len(b.claim_feeds("c", NOW + timedelta(seconds=61), 100, 60)) == 50
    a.close()
    b.close()


def test_storing_the_next_check_ends_the_lease(pg_url):
    s = PostgresStore(pg_url)
    f1, f2 = feeds(s, 2)
    assert [r.feed_id for r in s.claim_feeds("w", NOW, 10, 600)] == [f1, f2]
    s.set_schedule(f1, NOW + timedelta(hours=1), "test", None, NOW)
    # f1 is not due (next check in an hour); f2 is still leased
    assert s.claim_feeds("v", NOW, 10, 600) == []
    assert s.release_leases("w") == 1
    assert [r.feed_id for r in s.claim_feeds("v", NOW, 10, 600)] == [f2]
    # without due_only every live feed can be claimed, the scheduled one too
    s.release_leases("v")
    assert [r.feed_id for r in s.claim_feeds("v", NOW, 10, 600, due_only=False)] == [f1, f2]
    s.close()


def test_one_clustering_worker_at_a_time_and_handover(pg_url):
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    assert a.lead_clustering() is True
    assert b.lead_clustering() is False
    a.close()  # the worker goes away: its session and lock with it
    # the server ends the closed session (and frees its lock) on its own time, just after the
    # client has closed: a follower asks again, as the stage does each run
    deadline = time.monotonic() + 10
    while not b.lead_clustering() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.lead_clustering() is True
    b.close()


def test_stale_clusterer_write_is_refused(db_target):
    s = open_store(db_target)
    feed = s.add_feed("https://x.example/0", None, NOW)
    store_entries(s, feed, [make_entry(feed.id, 1, NOW)], NOW)
    eid = s.unclustered()[0].entry_id
    gen = s.cluster_generation()
    with s._write() as db:  # a correction happens meanwhile
        s._bump_generation(db)
    with pytest.raises(ClusterConflictError):
        s.apply_clustering([(eid, 1, 1.0, "new")], [], NOW, gen)
    assert s.story_count() == 0 and s.unclustered()[0].story_id is None
    s.apply_clustering([(eid, 1, 1.0, "new")], [], NOW, gen + 1)
    assert s.story_count() == 1
    s.close()


def test_two_workers_ingesting_the_same_story_at_once_end_with_one_story(server, pg_url):
    """Two outlets carry the same article (same canonical URL) and a report of the same event;
    two workers update at the same moment, each with its own feeds."""
    t = datetime.now(UTC) - timedelta(hours=1)
    link = "https://wire.example/quake-chile?utm_source=a"
    server.expect_request("/a.xml").respond_with_data(
        rss(
            "A",
            [
                {
                    "title": "Strong 6.8 earthquake hits northern Chile",
                    "link": link,
                    "guid": "a1",
                    "date": t,
                }
            ],
        )
    )
    server.expect_request("/b.xml").respond_with_data(
        rss(
            "B",
            [
                {
                    "title": "Magnitude 6.8 quake strikes northern Chile",
                    "link": "https://wire.example/quake-chile?utm_source=b",
                    "guid": "b1",
                    "date": t,
                }
            ],
        )
    )
    w1, w2 = Aggregator.open(db=pg_url, settings=FAST), Aggregator.open(db=pg_url, settings=FAST)
    fa = w1.add_feed(server.url_for("/a.xml"), check=False).feed.id
    fb = w2.add_feed(server.url_for("/b.xml"), check=False).feed.id
    barrier = threading.Barrier(2)
    summaries = {}

    def go(name, agg, feed):
        barrier.wait()
        summaries[name] = agg.update(feeds=[feed])

    threads = [
        threading.Thread(target=go, args=("w1", w1, fa)),
        threading.Thread(target=go, args=("w2", w2, fb)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert summaries["w1"].new_entries == summaries["w2"].new_entries == 1
    deferred = [s for s in summaries.values() if s.clustering_deferred]
    assert len(deferred) == 1 and "clustering left to" in deferred[0].line()
    # whichever worker did not lead clustering left its entry to the leader's next round
    for agg in (w1, w2):
        agg.update(feeds=[])
    stories = w1.stories()
    assert len(stories) == 1 and stories[0].source_count == 2
    rows = w1.store.db.execute(
        "SELECT url, count(*), count(DISTINCT story_id) FROM entries GROUP BY url"
    ).fetchall()
    assert rows == [("https://wire.example/quake-chile", 2, 1)]
    w1.close()
    w2.close()


def _rows(execute, table, cols):
    return sorted(tuple(r) for r in execute(f"SELECT {cols} FROM {table}"))


def test_sqlite_store_migrates_to_postgresql_with_every_row(server, tmp_path, pg_url):
    t = datetime.now(UTC) - timedelta(hours=2)
    items = [
        {
            "title": f"Rotterdam dock workers strike day {i}",
            "link": f"https://a.example/{i}",
            "guid": f"a{i}",
            "description": f"<p>Pay talks, part {i}; it's a \u00e9t\u00e9 story</p>",
            "date": t + timedelta(minutes=i),
        }
        for i in range(30)
    ]
    server.expect_request("/a.xml").respond_with_data(rss("A", items))
    server.expect_request("/b.xml").respond_with_data(
        rss(
            "B",
            [
                {
                    "title": "Dock workers in Rotterdam strike over pay",
                    "link": "https://b.example/1",
                    "guid": "b1",
                    "date": t,
                }
            ],
        )
    )
    db = tmp_path / "s.sqlite"
    run = Runner(db)
    run("feeds", "add", server.url_for("/a.xml"))
    run("feeds", "add", server.url_for("/b.xml"))
    run("update")
    first = json.loads(run("stories", "--format", "json").stdout)[0]["id"]
    members = json.loads(run("story", str(first), "--format", "json").stdout)
    if len(members) > 1:
        run("story", "split", str(first), str(members[-1]["entry_id"]))  # a correction to carry

    res = run("migrate", pg_url)
    assert "copied" in res.stdout and "entries: 31 rows" in res.stderr

    src = sqlite3.connect(db)
    pg = PostgresStore(pg_url)
    for table in ("feeds", "entries", "stories", "story_blocks", "corrections"):
        cols = ", ".join(r[1] for r in src.execute(f"PRAGMA table_info({table})"))
        assert _rows(src.execute, table, cols) == _rows(pg.db.execute, table, cols), table
    assert pg.cluster_generation() == int(
        src.execute("SELECT value FROM meta WHERE key = 'cluster_generation'").fetchone()[0]
    )
    # the PostgreSQL store answers as the SQLite one did, and new rows get fresh ids
    pg_run = Runner(pg_url)
    assert pg_run("stories", "--format", "json").stdout == run("stories", "--format", "json").stdout
    assert json.loads(pg_run("search", "rotterdam", "--format", "json").stdout)
    new = pg.add_feed("https://c.example/feed", None, NOW)
    assert new.id == 3
    pg.close()
    src.close()
    # a second migration into the now non-empty target is refused, in one line
    again = run("migrate", pg_url, ok=False)
    assert again.exit_code == 1 and again.stderr.startswith("error: ")
    assert "not empty" in again.stderr and again.stderr.count("\n") == 1
    bad = run("migrate", str(tmp_path / "x.sqlite"), ok=False)
    assert bad.exit_code == 1 and "not a PostgreSQL URL" in bad.stderr


def test_unreachable_server_is_one_line(tmp_path):
    res = Runner("postgresql://nobody@127.0.0.1:9/none")("feeds", "list", ok=False)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: cannot connect to the PostgreSQL store")
    assert res.stderr.count("\n") == 1


def test_lost_session_reconnects_and_clustering_restarts_from_the_store(pg_url, pg_admin):
    """A daemon outlives server restarts: the next round reconnects; the clustering lock went
    with the old session, so the clusterer is rebuilt from the store before it writes again."""
    from aggregator.clustering import ClusteringStage

    s = PostgresStore(pg_url)
    stage = ClusteringStage()
    assert s.lead_clustering() and s.lead_term == 1
    stage.run(s, NOW)
    stage.clusterer = object()  # stands for state built in the first term
    pid = s.conn.info.backend_pid
    pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(Exception):  # noqa: B017 - whatever psycopg raises for a dead session
        s.db.execute("SELECT 1").fetchone()
    assert s.ensure_connected() is True
    assert s.ensure_connected() is False  # healthy now
    s.add_feed("https://x.example/after", None, NOW)
    stage.run(s, NOW)
    assert s.lead_term == 2 and stage.term == 2
    assert stage.clusterer is None  # the first term's state is gone
    s.close()


def test_demo_web_app_and_exports_on_postgresql(pg_url):
    """The demo's round into PostgreSQL gives what it gives on SQLite (11 stories from 22
    entries), and the read-only web app, status and exports read it."""
    import io

    from starlette.testclient import TestClient

    from aggregator.demo import run_demo
    from aggregator.web import create_app

    out = io.StringIO()
    run_demo(Settings(), pg_url, out)
    assert "22 new entries" in out.getvalue() and "11 stories" in out.getvalue()
    c = TestClient(create_app(pg_url))
    assert c.get("/").text.count('class="story"') == 11
    found = c.get("/", params={"q": "earthquake"}).text
    assert "<mark>" in found and found.count('class="story"') == 2
    assert c.get("/", params={"q": '"unterminated'}).status_code == 400
    run = Runner(pg_url)
    status = json.loads(run("status", "--json").stdout)
    assert status["entries"] == 22 and status["stories"] == 11 and status["store_bytes"] > 0
    assert run("export", "--format", "atom").stdout.count("<entry>") == 11


def test_a_store_at_an_older_schema_is_upgraded_and_keeps_its_search(pg_url):
    from aggregator.store.pg_migrations import PG_MIGRATIONS

    old = psycopg_connect(pg_url)
    old.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at BIGINT NOT NULL)"
    )
    version, name, sql = PG_MIGRATIONS[0]
    old.execute(sql)
    old.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (version, name))
    old.execute("INSERT INTO feeds (url, added_at) VALUES ('https://x.example/f', 0)")
    old.execute(
        "INSERT INTO entries (feed_id, key, title, summary, published, first_seen, last_changed,"
        " content_hash) VALUES (1, 'g:1', 'Glacier collapse in the Alps', 'x', 0, 0, 0, 'h')"
    )
    old.close()
    s = PostgresStore(pg_url)
    assert s.schema_version() == max(v for v, _, _ in PG_MIGRATIONS)
    assert [h.entry.title for h in s.search("glacier")] == ["Glacier collapse in the Alps"]
    s.db.execute("UPDATE entries SET story_id = 1")  # not a text change: vector kept
    s.db.execute("UPDATE entries SET summary = 'moraine'")  # a text change: vector follows
    assert [h.entry.title for h in s.search("moraine")] == ["Glacier collapse in the Alps"]
    s.close()


def psycopg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)
