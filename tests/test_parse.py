import json
from datetime import UTC, datetime

import pytest

from aggregator.errors import NotAFeedError, ParseError
from aggregator.parse import discover_feed_links, parse_feed

from .conftest import rss, simple_items

URL = "https://outlet.example/feed"


def test_rss20():
    p = parse_feed(rss("Outlet", simple_items(3)).encode(), URL)
    assert p.format == "rss20"
    assert p.title == "Outlet"
    assert [e.guid for e in p.entries] == ["Item-0", "Item-1", "Item-2"]
    assert p.entries[0].published == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert p.warning is None


def test_atom10_with_relative_links_and_xml_base():
    doc = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://atom.example/blog/">
    <title>A</title><id>urn:a</id><updated>2026-11-20T10:00:00+02:00</updated>
    <entry><title type="html">&lt;b&gt;Hi&lt;/b&gt;</title><id>urn:1</id><link href="posts/1"/>
    <updated>2026-11-20T10:00:00+02:00</updated><content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry></feed>"""
    p = parse_feed(doc, URL)
    assert p.format == "atom10"
    e = p.entries[0]
    assert e.link == "https://atom.example/blog/posts/1"
    assert e.updated == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert "Body" in (e.summary_html or e.content_html)


def test_rss10_rdf():
    doc = b"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
    <channel rdf:about="https://r.example/"><title>R</title><link>https://r.example/</link><description>d</description></channel>
    <item rdf:about="https://r.example/1"><title>One</title><link>https://r.example/1</link></item></rdf:RDF>"""
    p = parse_feed(doc, URL)
    assert p.format == "rss10"
    assert p.entries[0].title == "One"


@pytest.mark.parametrize(
    "version", ["https://jsonfeed.org/version/1", "https://jsonfeed.org/version/1.1"]
)
def test_json_feed(version):
    doc = {
        "version": version,
        "title": "J",
        "home_page_url": "https://j.example/",
        "items": [
            {
                "id": 1,
                "url": "https://j.example/1",
                "title": "One",
                "content_html": "<p>x</p>",
                "date_published": "2026-11-20T10:00:00Z",
                "authors": [{"name": "Ann"}],
            },
            {
                "id": "2",
                "content_text": "plain & simple",
                "date_modified": "2026-11-21T10:00:00+01:00",
            },
            "not an object",
        ],
    }
    p = parse_feed(json.dumps(doc).encode(), URL)
    assert p.format == ("json11" if version.endswith("1.1") else "json10")
    assert [e.guid for e in p.entries] == ["1", "2"]
    assert p.entries[0].published == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert p.entries[0].author == "Ann"
    assert p.entries[1].summary_html == "plain &amp; simple"
    assert p.entries[1].updated == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def test_json_that_is_not_a_feed():
    with pytest.raises(ParseError, match="not a JSON Feed"):
        parse_feed(b'{"hello": "world"}', URL)
    with pytest.raises(ParseError, match="invalid JSON"):
        parse_feed(b'{"items": [', URL)


def test_truncated_feed_keeps_good_entries_and_warns():
    full = rss("Outlet", simple_items(5))
    cut = full[: full.index("<item>", full.index("Item 3"))] + "<item><title>broken"
    p = parse_feed(cut.encode(), URL)
    assert len(p.entries) >= 3
    assert p.warning and "partly readable" in p.warning


def test_html_page_linking_a_feed():
    page = b"""<!DOCTYPE html><html><head><title>x</title>
    <link rel="alternate" type="application/atom+xml" href="/atom.xml">
    <link rel="alternate" type="application/rss+xml" href="https://other.example/rss">
    <link rel="stylesheet" href="/s.css"></head><body>hi</body></html>"""
    with pytest.raises(NotAFeedError) as info:
        parse_feed(page, "https://site.example/blog/")
    assert info.value.alternates == ("https://other.example/rss", "https://site.example/atom.xml")
    assert "HTML page" in str(info.value)


def test_html_page_without_feed_links():
    with pytest.raises(NotAFeedError) as info:
        parse_feed(b"<html><body>Hello</body></html>", URL)
    assert info.value.alternates == ()
    assert "links no feed" in str(info.value)


def test_discover_ignores_non_http_links():
    page = b'<html><head><link rel="alternate" type="application/rss+xml" href="javascript:x"></head></html>'
    assert discover_feed_links(page, URL) == ()


@pytest.mark.parametrize(
    "body", [b"", b"   \n", b"garbage that is not xml at all", b"\x00\x01\x02"]
)
def test_not_a_feed_at_all(body):
    with pytest.raises(ParseError):
        parse_feed(body, URL)


def test_latin1_declared_encoding():
    doc = rss("Café", [{"title": "Crème brûlée", "guid": "1"}]).replace(
        'encoding="UTF-8"', 'encoding="ISO-8859-1"'
    )
    p = parse_feed(doc.encode("latin-1"), URL)
    assert p.title == "Café"
    assert p.entries[0].title == "Crème brûlée"


def test_stray_latin1_byte_does_not_garble_a_utf8_feed():
    doc = rss("Jyväskylä news", [{"title": "Jyväskylä: café reopens", "guid": "1"}]).encode("utf-8")
    doc = doc.replace(b"</channel>", b"<copyright>\xa9 2006</copyright></channel>")
    with pytest.raises(UnicodeDecodeError):
        doc.decode("utf-8")
    p = parse_feed(doc, URL)
    assert p.title == "Jyväskylä news"
    assert p.entries[0].title == "Jyväskylä: café reopens"
