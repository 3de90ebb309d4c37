"""Bytes -> ParsedFeed. Detects the format: JSON Feed is read here, RSS/RDF/Atom by feedparser.

    parse_feed(body, url, content_type) -> ParsedFeed
        raises NotAFeedError  (an HTML page; carries the feed URLs it links)
        raises ParseError     (anything else that yields no feed)

A feed that is only partly readable (feedparser's "bozo") still yields the entries it has and a
``warning`` naming the problem.
"""

from __future__ import annotations

import calendar
import codecs
import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin

import feedparser
from selectolax.lexbor import LexborHTMLParser

from .errors import NotAFeedError, ParseError
from .models import ParsedFeed, RawEntry

FEED_LINK_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
    "application/rdf+xml",
    "application/xml",
    "text/xml",
)
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html|<head|<body)", re.IGNORECASE | re.DOTALL
)
_BOM = b"\xef\xbb\xbf"
# bozo reasons that lose nothing: a wrong or missing Content-Type, an encoding fixed up.
_BENIGN = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)

# feedparser reads sgmllib-style HTML from module-level settings; we want its sanitizer on (the
# HTML we keep may be shown in a browser later) and relative links resolved.
feedparser.SANITIZE_HTML = True
feedparser.RESOLVE_RELATIVE_URIS = True


def parse_feed(body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    if not body or not body.strip():
        raise ParseError("empty response body; the server sent no feed")
    head = body[:512].lstrip(_BOM + b" \t\r\n")
    if head[:1] in (b"{", b"["):
        return parse_json_feed(body)
    if _HTML_START.match(head[:512]):
        raise _not_a_feed(body, url)
    if head.startswith(b"<?xml") and not body.startswith(b"<?xml"):
        # Whitespace (often from a PHP template) before the XML declaration makes the
        # document ill-formed, although nothing is lost by dropping it.
        body = body.lstrip(b" \t\r\n")
    body = repair_utf8(body)
    fast = parse_fast(body)
    if fast is not None:
        return fast
    return _parse_xml(body, url, content_type)


def _cp1252_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    return err.object[err.start : err.end].decode("cp1252", "replace"), err.end


codecs.register_error("aggregator-cp1252", _cp1252_bytes)


def repair_utf8(body: bytes) -> bytes:
    """A document that is UTF-8 (declared, or by default) except for a few stray bytes, often
    a Latin-1 (c) or an em dash pasted in a footer, is read byte by byte: the stray bytes as
    windows-1252, the rest as UTF-8. Left alone, feedparser would decode the whole document as
    windows-1252 and turn every accented letter into mojibake."""
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:64]:
        return body  # UTF-16/32
    m = _XML_DECL_ENCODING.search(body[:200])
    if m and m.group(1).lower() not in (b"utf-8", b"utf8"):
        return body
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError:
        pass
    text = body.decode("utf-8", "aggregator-cp1252")
    if text.count("\ufffd") > len(text) // 100:
        return body  # not mostly UTF-8 after all: let feedparser sniff it
    return text.encode("utf-8")


def _parse_xml(body: bytes, url: str, content_type: str | None) -> ParsedFeed:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    if "charset" not in (content_type or "").lower() and not _XML_DECL_ENCODING.search(body[:200]):
        # Without this, feedparser applies RFC 3023's text/xml default (us-ascii, read as
        # iso-8859-1) to undeclared documents, turning valid UTF-8 into mojibake.
        try:
            body.decode("utf-8")
            headers["content-type"] = (content_type or "application/xml") + "; charset=utf-8"
        except UnicodeDecodeError:
            pass
    try:
        d = feedparser.parse(body, response_headers=headers)
    except Exception as e:  # feedparser is documented not to raise, but be sure
        raise ParseError(f"feed could not be parsed: {type(e).__name__}: {e}") from e
    warning = None
    exc = d.get("bozo_exception") if d.get("bozo") else None
    if exc is not None and not isinstance(exc, _BENIGN):
        warning = f"partly readable: {type(exc).__name__}: {exc}"[:500]
    if not d.get("version") and not d.entries:
        if b"<html" in body[:4096].lower():
            raise _not_a_feed(body, url)
        raise ParseError(f"not a feed ({warning or 'no RSS, Atom or JSON Feed found'})")
    if warning and not d.entries and not d.feed.get("title"):
        raise ParseError(f"feed could not be read: {warning}")
    f = d.feed
    entries = tuple(_entry_from_feedparser(e) for e in d.entries)
    ttl = _feed_interval(f)
    return ParsedFeed(
        format=d.get("version") or "unknown",
        title=f.get("title") or None,
        link=f.get("link") or None,
        entries=entries,
        warning=warning,
        ttl_minutes=ttl,
    )


_XML_DECL_ENCODING = re.compile(rb"<\?xml[^>]*encoding=[\"']([^\"']+)", re.IGNORECASE)
_ENTITY_DECL = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_fast(body: bytes) -> ParsedFeed | None:
    """fastfeedparser (lxml, ~50x feedparser's speed) for the common case, or None to let
    feedparser read the document. Taken only where the two read the same entries (checked over
    the real-feed corpus by tests/test_parse.py): strict UTF-8, no DOCTYPE/entity declarations,
    no CDATA, no authors / dc:date / media elements, as many entries as <item>/<entry> tags,
    and every entry with an id or link, a summary, one parseable date and no separate full
    text. Anything else goes to feedparser."""
    try:
        import fastfeedparser
    except ImportError:  # pragma: no cover - an optional accelerator
        return None
    m = _XML_DECL_ENCODING.search(body[:200])
    if m and m.group(1).lower() not in (b"utf-8", b"utf8"):
        return None
    if _ENTITY_DECL.search(body[:4096]) or b"<![CDATA[" in body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        # text, not bytes: fastfeedparser would guess an encoding for undeclared documents
        d = fastfeedparser.parse(
            text, include_tags=False, include_media=False, include_enclosures=False
        )
    except Exception:
        return None
    feed, raw_entries = d.get("feed") or {}, d.get("entries") or []
    if not raw_entries or len(raw_entries) != body.count(b"<item") + body.count(b"<entry"):
        return None  # recovered from broken XML, or items it skipped: feedparser's reading
    if b"author>" in body or b"creator>" in body or b"dc:date" in body or b"<media:" in body:
        return None  # fields the two parsers report differently
    entries = []
    for e in raw_entries:
        get = e.get
        description = get("description") or None
        if not description:
            return None  # no summary
        for c in get("content") or ():
            if c.get("value") != description:
                return None  # full text beside it
        when = get("published")
        if get("updated") and get("updated") != when:
            return None  # two different dates
        # (an updated date is the published one's text, read once: both or neither parse)
        published = _any_date(when)
        if published is None or not (get("id") or get("link")):
            return None  # no date it reads, or nothing to tell the entry by
        entries.append(
            RawEntry(
                guid=get("id") or None,
                link=get("link") or None,
                title=get("title") or None,
                summary_html=description,
                content_html=None,
                author=None,
                published=published,
                updated=None,
            )
        )
    head = body[:1024]
    fmt = (
        "rss20"
        if b"<rss" in head
        else "atom10"
        if b"<feed" in head
        else "rss10"
        if b"<rdf" in head
        else "xml"
    )
    return ParsedFeed(
        format=fmt,
        title=feed.get("title") or None,
        link=feed.get("link") or None,
        entries=tuple(entries),
    )


_PERIOD_MINUTES = {"hourly": 60, "daily": 1440, "weekly": 10080, "monthly": 43200, "yearly": 525600}


def _feed_interval(f) -> int | None:
    """Minutes the feed asks readers to wait: RSS <ttl>, or sy:updatePeriod / updateFrequency."""
    out = []
    try:
        if f.get("ttl"):
            out.append(int(str(f.get("ttl")).strip()))
    except (TypeError, ValueError):
        pass
    period = str(f.get("sy_updateperiod") or "").strip().lower()
    if period in _PERIOD_MINUTES:
        try:
            freq = max(1, int(str(f.get("sy_updatefrequency") or "1").strip()))
        except ValueError:
            freq = 1
        out.append(_PERIOD_MINUTES[period] // freq)
    out = [m for m in out if m > 0]
    return max(out) if out else None


def _struct_to_dt(t) -> datetime | None:
    if not t:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(t), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def _entry_from_feedparser(e) -> RawEntry:
    content = None
    if e.get("content"):
        content = e.content[0].get("value")
    summary = e.get("summary")
    if summary and content and summary == content:
        content = None
    link = e.get("link")
    if not link:
        for lk in e.get("links", ()):
            if lk.get("href") and lk.get("rel", "alternate") == "alternate":
                link = lk["href"]
                break
    return RawEntry(
        guid=e.get("id") or None,
        link=link or None,
        title=e.get("title") or None,
        summary_html=summary or None,
        content_html=content or None,
        author=e.get("author") or None,
        # dict.get: bypass feedparser's deprecated updated->published key fallback
        published=_struct_to_dt(dict.get(e, "published_parsed")),
        updated=_struct_to_dt(dict.get(e, "updated_parsed")),
    )


def _not_a_feed(body: bytes, url: str) -> NotAFeedError:
    alternates = discover_feed_links(body, url)
    if alternates:
        return NotAFeedError(
            f"this is an HTML page, not a feed; it links the feed {alternates[0]}", alternates
        )
    return NotAFeedError("this is an HTML page, not a feed, and it links no feed")


def discover_feed_links(body: bytes, url: str) -> tuple[str, ...]:
    """Feed URLs named by <link rel="alternate" type="..."> in an HTML page, best first."""
    try:
        tree = LexborHTMLParser(body[:2_000_000].decode("utf-8", "replace"))
    except Exception:
        return ()
    found: list[tuple[int, str]] = []
    for node in tree.css("link[rel][href]"):
        rels = (node.attributes.get("rel") or "").lower().split()
        typ = (node.attributes.get("type") or "").lower().split(";")[0].strip()
        if "alternate" in rels and typ in FEED_LINK_TYPES:
            href = urljoin(url, (node.attributes.get("href") or "").strip())
            if href.startswith(("http://", "https://")):
                found.append((FEED_LINK_TYPES.index(typ), href))
    seen: dict[str, None] = {}
    for _, href in sorted(found, key=lambda x: x[0]):
        seen.setdefault(href, None)
    return tuple(seen)


def _any_date(value) -> datetime | None:
    """RFC 3339 / ISO 8601, else RFC 822 (as RSS uses); None when neither reads it."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            dt = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _str(v) -> str | None:
    return v if isinstance(v, str) and v else (str(v) if isinstance(v, int | float) else None)


def parse_json_feed(body: bytes) -> ParsedFeed:
    """JSON Feed 1.0 / 1.1 (https://www.jsonfeed.org/version/1.1/)."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ParseError(f"invalid JSON: {e}") from e
    if isinstance(doc, dict) and isinstance(doc.get("rss"), dict):
        return _parse_rss_in_json(doc["rss"])
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ParseError("JSON document is not a JSON Feed (no 'items' list)")
    version = str(doc.get("version") or "")
    fmt = "json11" if version.endswith("/1.1") else "json10"
    entries = []
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        author = None
        authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
        if isinstance(authors, list) and authors and isinstance(authors[0], dict):
            author = _str(authors[0].get("name"))
        html = _str(item.get("content_html"))
        text = _str(item.get("content_text"))
        summary = _str(item.get("summary"))
        entries.append(
            RawEntry(
                guid=_str(item.get("id")),
                link=_str(item.get("url")) or _str(item.get("external_url")),
                title=_str(item.get("title")),
                summary_html=summary or html or (text and _escape(text)),
                content_html=html if summary else None,
                author=author,
                published=_any_date(item.get("date_published")),
                updated=_any_date(item.get("date_modified")),
            )
        )
    return ParsedFeed(
        format=fmt,
        title=_str(doc.get("title")),
        link=_str(doc.get("home_page_url")),
        entries=tuple(entries),
    )


def _parse_rss_in_json(rss: dict) -> ParsedFeed:
    """RSS 2.0 written as JSON ({"rss": {"channel": {"item": [...]}}}), as scripting.com does."""
    channel = rss.get("channel")
    if not isinstance(channel, dict):
        raise ParseError("JSON document is not a feed (rss without a channel)")
    items = channel.get("item") or []
    if isinstance(items, dict):
        items = [items]
    entries = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        guid = item.get("guid")
        if isinstance(guid, dict):
            guid = guid.get("#value") or guid.get("value")
        entries.append(
            RawEntry(
                guid=_str(guid),
                link=_str(item.get("link")),
                title=_str(item.get("title")),
                summary_html=_str(item.get("description")),
                content_html=None,
                author=_str(item.get("author")),
                published=_any_date(item.get("pubDate")),
                updated=None,
            )
        )
    return ParsedFeed(
        format="rss-json",
        title=_str(channel.get("title")),
        link=_str(channel.get("link")),
        entries=tuple(entries),
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
