"""Whole rounds through the library API against a real local server, on both stores (a SQLite
file, a PostgreSQL schema)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Request, Response

from aggregator.api import Aggregator
from aggregator.config import FetchSettings, Settings
from aggregator.models import Outcome

from .conftest import rss, simple_items

FAST = Settings(
    fetch=FetchSettings(connect_timeout=2, read_timeout=1, total_timeout=2, concurrency=8)
)


class Clock:
    def __init__(self, start=datetime(2026, 11, 25, 12, 0, tzinfo=UTC)):
        self.now = start

    def __call__(self):
        return self.now


def open_agg(db_target, clock=None, settings=FAST):
    return Aggregator.open(db=db_target, settings=settings, clock=clock or Clock())


def hits(server, path):
    return sum(1 for req, _ in server.log if req.path == path)


def test_one_bad_feed_never_stops_the_others(server, db_target):
    for i in range(20):
        server.expect_request(f"/ok{i}").respond_with_data(rss(f"F{i}", simple_items(3, f"F{i}")))
    server.expect_request("/hang").respond_with_handler(lambda r: (time.sleep(3), Response("x"))[1])
    server.expect_request("/500").respond_with_data("no", status=500)
    server.expect_request("/html").respond_with_data(
        "<html><body>hi</body></html>", content_type="text/html"
    )
    server.expect_request("/junk").respond_with_data(b"\x00\xff garbage")
    with open_agg(db_target) as agg:
        for path in [f"/ok{i}" for i in range(20)] + ["/hang", "/500", "/html", "/junk"]:
            agg.add_feed(server.url_for(path), check=False)
        started = time.monotonic()
        summary = agg.update()
        assert time.monotonic() - started < 5
        assert summary.ok == 20
        assert summary.new_entries == 60
        by_url = {r.url.rsplit("/", 1)[1]: r for r in summary.results}
        assert by_url["hang"].outcome is Outcome.TIMEOUT
        assert by_url["500"].outcome is Outcome.HTTP_ERROR
        assert by_url["html"].outcome is Outcome.PARSE_ERROR and "HTML page" in by_url["html"].error
        assert by_url["junk"].outcome is Outcome.PARSE_ERROR
        assert len(agg.entries(limit=1000)) == 60


def test_conditional_get_on_the_next_round(server, db_target):
    body = rss("A", simple_items(2))

    def handler(request: Request):
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304)
        return Response(body, headers={"ETag": '"v1"'}, content_type="application/rss+xml")

    server.expect_request("/a").respond_with_handler(handler)
    with open_agg(db_target) as agg:
        agg.add_feed(server.url_for("/a"), check=False)
        first = agg.update()
        second = agg.update()
    assert first.results[0].outcome is Outcome.OK and first.new_entries == 2
    assert second.results[0].outcome is Outcome.NOT_MODIFIED
    assert server.log[-1][0].headers.get("If-None-Match") == '"v1"'


def test_changed_entry_is_updated_not_duplicated(server, db_target):
    items = simple_items(2)
    state = {"body": rss("A", items)}
    server.expect_request("/a").respond_with_handler(lambda r: Response(state["body"]))
    with open_agg(db_target) as agg:
        agg.add_feed(server.url_for("/a"), check=False)
        agg.update()
        items[0] = {**items[0], "title": "Corrected headline"}
        state["body"] = rss("A", items)
        s = agg.update()
        assert (s.new_entries, s.updated_entries) == (0, 1)
        titles = sorted(e.title for e in agg.entries())
    assert titles == ["Corrected headline", "Item 1"]


def test_permanent_redirect_updates_the_feed_url(server, db_target):
    server.expect_request("/old").respond_with_data("", status=301, headers={"Location": "/new"})
    server.expect_request("/new").respond_with_data(rss("A", simple_items(1)))
    with open_agg(db_target) as agg:
        feed = agg.add_feed(server.url_for("/old"), check=False).feed
        agg.update()
        moved = agg.feed(feed.id)
        assert moved.url == server.url_for("/new")
        assert moved.previous_urls == (server.url_for("/old"),)
        agg.update()
    assert hits(server, "/old") == 1 and hits(server, "/new") == 2


def test_temporary_redirect_keeps_the_feed_url(server, db_target):
    server.expect_request("/old").respond_with_data("", status=302, headers={"Location": "/new"})
    server.expect_request("/new").respond_with_data(rss("A", simple_items(1)))
    with open_agg(db_target) as agg:
        feed = agg.add_feed(server.url_for("/old"), check=False).feed
        agg.update()
        assert agg.feed(feed.id).url == server.url_for("/old")


def test_gone_feed_is_not_polled_again(server, db_target):
    server.expect_request("/gone").respond_with_data("bye", status=410)
    with open_agg(db_target) as agg:
        feed = agg.add_feed(server.url_for("/gone"), check=False).feed
        assert agg.update().results[0].outcome is Outcome.GONE
        assert agg.update().results == ()
        assert agg.feed(feed.id).gone
    assert hits(server, "/gone") == 1


def test_retry_after_is_honoured_across_rounds(server, db_target):
    server.expect_request("/busy").respond_with_data(
        "later", status=429, headers={"Retry-After": "600"}
    )
    clock = Clock()
    with open_agg(db_target, clock) as agg:
        agg.add_feed(server.url_for("/busy"), check=False)
        agg.update()
        clock.now += timedelta(minutes=5)
        skipped = agg.update()
        assert skipped.results == () and skipped.skipped == 1
        assert "skipped (Retry-After)" in skipped.line()
        clock.now += timedelta(minutes=6)
        assert len(agg.update().results) == 1
    assert hits(server, "/busy") == 2


def test_parse_error_does_not_keep_validators(server, db_target):
    server.expect_request("/a").respond_with_data(
        "<html><body>oops</body></html>", headers={"ETag": '"x"'}
    )
    with open_agg(db_target) as agg:
        feed = agg.add_feed(server.url_for("/a"), check=False).feed
        agg.update()
        got = agg.feed(feed.id)
    assert got.last_status == "parse_error" and got.etag is None


def test_partial_feed_stores_good_entries_and_records_warning(server, db_target):
    full = rss("A", simple_items(4))
    server.expect_request("/a").respond_with_data(
        full[: full.rindex("<item>")] + "<item><title>cut"
    )
    with open_agg(db_target) as agg:
        feed = agg.add_feed(server.url_for("/a"), check=False).feed
        s = agg.update()
        got = agg.feed(feed.id)
    assert s.new_entries >= 3
    assert got.last_status == "ok" and "partly readable" in got.last_error


def test_same_canonical_link_in_one_feed_without_guid_is_one_entry(server, db_target):
    items = [
        {"title": "A", "link": "https://x.example/a?utm_source=1"},
        {"title": "A again", "link": "https://x.example/a?utm_source=2"},
    ]
    server.expect_request("/a").respond_with_data(rss("A", items))
    with open_agg(db_target) as agg:
        agg.add_feed(server.url_for("/a"), check=False)
        assert agg.update().new_entries == 1


@pytest.mark.parametrize(("per_host", "most"), [(2, 2), (0, 6)])
def test_per_host_limit(server, db_target, per_host, most):
    """At most fetch.per_host requests at once to one host, whatever the global limit."""
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.4)
        with lock:
            state["now"] -= 1
        return Response(rss("X", []))

    for i in range(6):
        server.expect_request(f"/f{i}.xml").respond_with_handler(handler)
    settings = Settings(fetch=FetchSettings(concurrency=16, per_host=per_host, total_timeout=10))
    with open_agg(db_target, settings=settings) as agg:
        for i in range(6):
            agg.add_feed(server.url_for(f"/f{i}.xml"), check=False)
        assert agg.update().ok == 6
    assert state["max"] == most


def test_the_round_line_says_how_long_fetching_and_clustering_took(server, db_target):
    from aggregator.models import RoundSummary
    from aggregator.normalize import utcnow

    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    done = RoundSummary(
        t0, t0 + timedelta(seconds=9.5), clustered=5, fetched_at=t0 + timedelta(seconds=3.4)
    )
    assert done.line().startswith("0 feeds in 9.5s (3.4s fetching and storing, 6.1s clustering):")
    # nothing clustered (an all-304 round): nothing to split
    assert RoundSummary(t0, t0, fetched_at=t0).line().startswith("0 feeds in 0.0s: ")

    server.expect_request("/a").respond_with_data(rss("A", simple_items(3)))
    with open_agg(db_target, clock=utcnow) as agg:
        agg.add_feed(server.url_for("/a"), check=False)
        summary = agg.update()
    assert summary.clustered == 3
    assert summary.started_at <= summary.fetched_at <= summary.finished_at
    assert "s fetching and storing, " in summary.line()


def _has_time_index(path) -> bool:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'entries_published'"
        ).fetchone()
    finally:
        db.close()
    return row is not None


def test_a_first_round_builds_the_index_of_entries_by_time_once_its_entries_are_in(
    server, tmp_path
):
    """Into an empty SQLite store, a round writes its entries without the index of entries by
    time (each would go to a random place in it: store.sqlite.DEFERRED_INDEXES) and builds it
    once they are in; a later round keeps it as it is, and one after a round that died
    before building it builds it."""
    path = str(tmp_path / "s.sqlite")
    seen = []

    def feed(request: Request):
        seen.append(_has_time_index(path))  # (while the round fetches)
        return Response(rss("A", simple_items(3, "A")), content_type="application/rss+xml")

    server.expect_request("/a").respond_with_handler(feed)
    with open_agg(path) as agg:
        agg.add_feed(server.url_for("/a"), check=False)
        assert _has_time_index(path)
        assert agg.update().new_entries == 3
        assert seen == [False] and _has_time_index(path)
        agg.update()
        assert seen == [False, True] and _has_time_index(path)
        agg.store.db.execute("DROP INDEX entries_published")  # (a round that died midway)
        agg.update()
        assert _has_time_index(path)
        assert [e.title for e in agg.entries(limit=1)] == ["A 0"]
