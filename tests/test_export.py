"""Feeds out: Atom 1.0 read back with feedparser, JSON Feed 1.1 checked against its spec."""

from __future__ import annotations

import json
import re

import feedparser
import pytest

from aggregator.config import Settings
from aggregator.demo import run_demo


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    import io

    db = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    run_demo(Settings(), db, io.StringIO())
    return db


def export(demo_db, *args):
    from click.testing import CliRunner

    from aggregator.cli import cli

    res = CliRunner().invoke(cli, ["--db", str(demo_db), "export", *args])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_atom_reads_back(demo_db):
    d = feedparser.parse(export(demo_db, "--format", "atom"))
    assert d.version == "atom10" and not d.bozo, d.get("bozo_exception")
    assert len(d.entries) == 11
    rotterdam = next(e for e in d.entries if "Rotterdam" in e.title)
    assert rotterdam.id.startswith("urn:aggregator:story:")
    assert "4 sources" in rotterdam.content[0].value
    assert len(re.findall(r'<a href="https://', rotterdam.content[0].value)) == 4
    for outlet in ("The Daily Planet", "Metro Courier", "Northern Herald", "Harbour Times"):
        assert outlet in rotterdam.content[0].value
    assert rotterdam.link.startswith("https://dailyplanet.example/")
    assert len([link for link in rotterdam.links if link.rel == "alternate"]) == 1
    multi = feedparser.parse(export(demo_db, "--format", "atom", "--min-sources", "3"))
    assert len(multi.entries) == 4  # Rotterdam (4 sources), quake, ECB, lander (3 each)


def check_jsonfeed_11(doc: dict) -> None:
    """The JSON Feed 1.1 rules (https://www.jsonfeed.org/version/1.1/) we rely on."""
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["items"], list)
    for key in ("home_page_url", "feed_url", "description"):
        assert key not in doc or isinstance(doc[key], str)
    for key in doc:
        assert key in {
            "version",
            "title",
            "home_page_url",
            "feed_url",
            "description",
            "user_comment",
            "next_url",
            "icon",
            "favicon",
            "authors",
            "language",
            "expired",
            "hubs",
            "items",
        } or key.startswith("_"), key
    ids = set()
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"] not in ids
        ids.add(item["id"])
        assert isinstance(item.get("content_html"), str) or isinstance(
            item.get("content_text"), str
        )
        for key in ("date_published", "date_modified"):
            if key in item:
                assert re.fullmatch(
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)", item[key]
                )
        for key in item:
            assert key in {
                "id",
                "url",
                "external_url",
                "title",
                "content_html",
                "content_text",
                "summary",
                "image",
                "banner_image",
                "date_published",
                "date_modified",
                "authors",
                "tags",
                "language",
                "attachments",
            } or key.startswith("_"), key


def test_jsonfeed_follows_the_spec_and_lists_sources(demo_db):
    doc = json.loads(export(demo_db, "--format", "jsonfeed"))
    check_jsonfeed_11(doc)
    assert len(doc["items"]) == 11
    quake = next(i for i in doc["items"] if i["title"].startswith("Magnitude 6.8"))
    assert quake["_aggregator"]["source_count"] == 3
    assert {s["outlet"] for s in quake["_aggregator"]["sources"]} == {
        "The Daily Planet",
        "Globe Wire",
        "Metro Courier",
    }
    # and our own parser reads it back
    from aggregator.parse import parse_json_feed

    parsed = parse_json_feed(json.dumps(doc).encode())
    assert len(parsed.entries) == 11


def test_opml_export(demo_db):
    out = export(demo_db, "--format", "opml")
    assert out.count("<outline") == 5 and 'version="2.0"' in out


def test_text_in_feeds_is_escaped(tmp_path, server):
    from aggregator.api import Aggregator

    from .conftest import rss

    server.expect_request("/x.xml").respond_with_data(
        rss(
            "<script>alert(1)</script> & co",
            [
                {
                    "title": 'A <b>bold</b> & "quoted" <script>x</script>',
                    "guid": "1",
                    "link": "https://x.example/a?b=1&c=2",
                }
            ],
        )
    )
    with Aggregator.open(db=tmp_path / "s.sqlite") as agg:
        agg.add_feed(server.url_for("/x.xml"))
        atom = agg.export("atom")
        jf = agg.export("jsonfeed")
    d = feedparser.parse(atom)
    assert "<script>" not in d.entries[0].content[0].value
    assert "<script" not in json.loads(jf)["items"][0]["content_html"].replace("&lt;script", "")
