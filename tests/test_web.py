"""The read-only web app: pages, API, feeds, escaping (Starlette's TestClient, real store)."""

from __future__ import annotations

import io

import pytest
from starlette.testclient import TestClient

from aggregator.config import Settings
from aggregator.demo import run_demo
from aggregator.web import create_app

from .conftest import make_entry, store_entries


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("web") / "demo.sqlite"
    run_demo(Settings(), db, io.StringIO())
    return db


def test_pages_api_and_feeds(demo_db):
    c = TestClient(create_app(demo_db))
    page = c.get("/")
    assert page.status_code == 200 and page.text.count('class="story"') == 11
    assert c.get("/?min_sources=3").text.count('class="story"') == 4
    api = c.get("/api/stories", params={"min_sources": 4}).json()
    assert [s["source_count"] for s in api] == [4]
    story = c.get(f"/api/story/{api[0]['id']}").json()
    assert len(story["sources"]) == 4 and {s["outlet"] for s in story["sources"]} >= {
        "Harbour Times"
    }
    assert c.get(f"/story/{api[0]['id']}").text.count('class="source"') == 4
    assert c.get("/story/99999").status_code == 404
    assert c.get("/api/story/99999").status_code == 404
    found = c.get("/", params={"q": "earthquake"}).text
    assert "<mark>" in found and found.count('class="story"') == 2
    assert c.get("/", params={"q": '"unterminated'}).status_code == 400
    assert c.get("/feed.atom").headers["content-type"].startswith("application/atom+xml")
    assert c.get("/feed.json").json()["version"] == "https://jsonfeed.org/version/1.1"
    assert "<opml" in c.get("/subscriptions.opml").text


def test_all_feed_text_is_escaped(tmp_path):
    """Whatever text reaches the store (here written directly, bypassing normalization) is
    escaped in every page; a javascript: link never becomes an href."""
    from datetime import UTC, datetime

    from aggregator.store import SQLiteStore

    now = datetime.now(UTC)
    store = SQLiteStore(tmp_path / "s.sqlite")
    feed = store.add_feed("https://evil.example/feed", "<script>alert('outlet')</script>", now)
    nasty = "<img src=x onerror=alert(1)> & <script>alert(2)</script>"
    entry = make_entry(
        feed.id, 1, now, link="javascript:alert(3)", title=nasty, summary=nasty, summary_html=nasty
    )
    store_entries(store, feed, [entry], now)
    store.apply_clustering([(1, 1, 1.0, "new")], [], now)
    store.index_pending()
    store.close()
    c = TestClient(create_app(tmp_path / "s.sqlite"))
    for path in ("/", "/story/1", "/?q=alert"):
        html = c.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path
    assert 'href="javascript:' not in c.get("/story/1").text
    assert "&lt;script&gt;alert(&#39;outlet&#39;)&lt;/script&gt;" in c.get("/story/1").text


def test_reads_while_another_connection_writes(demo_db):
    """A reader works while a write transaction is open elsewhere (WAL)."""
    import sqlite3

    writer = sqlite3.connect(demo_db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE feeds SET user_title = 'x'")
    try:
        assert TestClient(create_app(demo_db)).get("/").status_code == 200
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_exports_never_link_non_http_urls():
    from datetime import UTC, datetime

    from aggregator.export import stories_atom, stories_jsonfeed
    from aggregator.models import Story, StoryDetail, StoryMember

    now = datetime.now(UTC)
    d = StoryDetail(
        Story(1, "t", now, now, 1, 1, 7),
        (StoryMember(7, 1, "o", "title", "javascript:alert(1)", None, now, 1.0, "new"),),
    )
    assert "javascript:" not in stories_atom([d], now, "urn:x")
    jf = stories_jsonfeed([d], now, "urn:x")
    assert "javascript" not in jf
