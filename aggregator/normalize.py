"""Pure normalization: canonical URLs, HTML to text, UTC dates, entry identity.

Nothing here does I/O or reads the clock: callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import urljoin, urlsplit, urlunsplit

from .models import Entry, ParsedFeed, RawEntry

# Query parameters that only track the reader, never select content. Matched case-insensitively;
# entries ending in "*" are prefixes.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "li_fat_id",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "hsctatracking",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "vero_conv",
        "wickedid",
        "rb_clickid",
        "s_cid",
        "ncid",
        "cmpid",
        "sr_share",
        "ref_src",
        "spm",
        "soc_src",
        "soc_trk",
        "at_medium",
        "at_campaign",
        "at_custom1",
        "at_custom2",
        "at_custom3",
        "at_custom4",
        "cndid",
        "smid",
        "smtyp",
        "__twitter_impression",
    }
)
TRACKING_PREFIXES = ("utm_", "ns_", "pk_", "mtm_", "piwik_", "matomo_", "itm_", "stm_")
DEFAULT_PORTS = {"http": "80", "https": "443"}

# Caps on stored text, so one huge entry cannot bloat the store.
MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 20_000
MAX_HTML_CHARS = 200_000
# Dates further ahead than this are taken as wrong and replaced by the time first seen.
MAX_FUTURE = timedelta(days=1)


def _is_tracking(name: str) -> bool:
    n = name.lower()
    return n in TRACKING_PARAMS or n.startswith(TRACKING_PREFIXES)


# URLs made only of characters that w3lib's canonicalization leaves as they are: a lowercase
# host, an optional port, a path of unreserved and sub-delimiter characters, a query of plain
# key=value pairs. Most feed links are like this; they take a short path that gives what w3lib
# gives (tests/test_normalize.py checks the two against each other), w3lib does the rest.
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([0-9]{1,5}))?"
    r"(/[A-Za-z0-9._~!$'()*,:@/=-]*)?"
    r"(?:\?([A-Za-z0-9._~=&-]*))?(?:#[^\s]*)?",
    re.ASCII,
)


def _plain_canonical_url(url: str) -> str | None:
    """canonical_url for a URL of ``_PLAIN_URL``'s form; None when it is not of that form."""
    m = _PLAIN_URL.fullmatch(url)
    if m is None:
        return None
    scheme, host, port, path, query = m.groups()
    if path and "/." in path and any(seg in (".", "..") for seg in path.split("/")):
        return None  # dot segments: w3lib resolves them
    if port is not None:
        number = int(port)
        if number > 65535:
            return None
        if number != int(DEFAULT_PORTS[scheme]):
            host = f"{host}:{number}"
    if query:
        pairs = []
        for part in query.split("&"):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq or "=" in value:  # w3lib rewrites these: let it
                return None
            pairs.append((key, value))
        pairs.sort()
        query = "&".join(f"{k}={v}" for k, v in pairs if not _is_tracking(k))
        if query:
            return f"{scheme}://{host}{path or '/'}?{query}"
    return f"{scheme}://{host}{path or '/'}"


def canonical_url(url: str | None, base: str | None = None) -> str | None:
    """The canonical form of an http(s) URL, or None when ``url`` is not one.

    Lowercase scheme and host, default port dropped, fragment dropped, tracking parameters
    dropped, remaining query parameters sorted, percent-encoding normalized (w3lib). A relative
    URL is resolved against ``base`` first.
    """
    if not url:
        return None
    url = url.strip()
    if base and not url.lower().startswith(("http://", "https://")):
        url = urljoin(base, url)
    plain = _plain_canonical_url(url)
    if plain is not None:
        return plain
    return _full_canonical_url(url)


def _full_canonical_url(url: str) -> str | None:
    # (imported here and in html_to_text, not at the top: a query command imports this module
    # for feed_url and would spend ~30 ms loading w3lib, urllib.request and selectolax)
    from w3lib.url import canonicalize_url

    try:
        parts = urlsplit(canonicalize_url(url, keep_fragments=False))
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = host if port is None or str(port) == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if parts.username or parts.password:
        userinfo = parts.username or ""
        if parts.password:
            userinfo += ":" + parts.password
        netloc = f"{userinfo}@{netloc}"
    query = parts.query
    if query:
        query = "&".join(p for p in query.split("&") if p and not _is_tracking(p.split("=", 1)[0]))
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
_BLOCK_TAG = re.compile(
    r"<(?=/?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|table|blockquote|section|article|header|"
    r"footer|figure|figcaption|pre|hr|dd|dt)\b)",
    re.IGNORECASE,
)
_DROP_TAGS = ["script", "style", "noscript", "template", "iframe", "object", "svg", "head"]


def clean_text(text: str) -> str:
    """Drop control characters and fold whitespace to single spaces."""
    if not text.isprintable():  # (controls are not: a printable text has none to drop)
        text = _CONTROL.sub("", text)
    # str.split() splits where the regex \s matches (tests check every code point), and
    # joining is 4x faster than substituting a space for each of a summary's spaces
    return " ".join(text.split())


_html_parser = None  # selectolax's LexborHTMLParser, imported by the first html_to_text


def html_to_text(html: str | None) -> str:
    """Plain text from an HTML fragment: entities decoded, scripts and styles dropped,
    block elements separated by a space, whitespace folded."""
    if not html:
        return ""
    if "<" not in html and "&" not in html:
        return clean_text(html)
    text = _simple_text(html)
    if text is None:
        text = _parsed_text(_BLOCK_TAG.sub(" <", html))
    return clean_text(unicodedata.normalize("NFC", text))


def _parsed_text(html: str) -> str:
    """The text of ``html`` as an HTML parser (lexbor) builds its document (block tags marked
    by a space before them, ``_BLOCK_TAG``)."""
    global _html_parser
    if _html_parser is None:
        from selectolax.lexbor import LexborHTMLParser as _html_parser
    tree = _html_parser(html)
    tree.strip_tags(_DROP_TAGS)
    root = tree.body or tree.root
    return root.text(deep=True, separator="", strip=False) if root is not None else ""


# -- the text of simple markup, without building a document ----------------------------------------
#
# Most feed summaries are text in a few plain tags (<p>, <a href>, <b>, <br>, <img>) with entities.
# For those, the document's text is the text between the tags, each run's character references
# decoded: no element among these moves text, drops it or reads it raw. Building lexbor's
# document took most of html_to_text's time. Anything else (another tag, a comment, a '<' that
# opens no tag, an attribute this grammar does not read, an unusual numeric reference) goes to
# the parser; tests/test_normalize.py checks that both give the same text, on generated markup
# and on every summary of the shared feed corpus.

# Elements whose tags only delimit text here: none of them is raw text, escapable raw text,
# foreign content or a table part, or drops a newline after it (<pre>, <listing>), or is
# parsed in an insertion mode of its own (<select>, <frameset>, <head>).
_SIMPLE_TAGS = frozenset(
    """a abbr address article aside b bdi bdo big blockquote br center cite code dd del dfn div
    dl dt em figcaption figure font footer h1 h2 h3 h4 h5 h6 header hr i img ins kbd li main
    mark nav ol p q s samp section small span strike strong sub sup time tt u ul var wbr""".split()  # noqa: SIM905
)
# the tags _BLOCK_TAG puts a space before, among these
_SIMPLE_BLOCKS = frozenset(
    """p div br li ul ol h1 h2 h3 h4 h5 h6 blockquote section article header footer figure
    figcaption hr dd dt""".split()  # noqa: SIM905
)
_WS = r"[ \t\n\f\r]"  # HTML's whitespace (not Python's \s)
_SIMPLE_TAG = re.compile(
    # an end tag: its name only; a start tag: its name, then attributes, each after whitespace:
    # a name, or a name = a quoted value or an unquoted one of ordinary characters
    rf"<(?:/([A-Za-z][A-Za-z0-9]*){_WS}*|([A-Za-z][A-Za-z0-9]*)"
    rf"(?:{_WS}+[^ \t\n\f\r/>\"'<=]+"
    rf"(?:{_WS}*={_WS}*(?:\"[^\"]*\"|'[^']*'|[^ \t\n\f\r>\"'=<`]+))?)*{_WS}*/?)>"
)
_NUMERIC_REF = re.compile(r"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+))")


def _ordinary_refs(text: str) -> bool:
    """Whether each numeric character reference in ``text`` names an ordinary character, one
    that html.unescape decodes as HTML does (it drops the controls and noncharacters HTML
    keeps, and reads more digits)."""
    for hexa, dec in _NUMERIC_REF.findall(text):
        digits = hexa or dec
        if len(digits) > 7:
            return False
        cp = int(digits, 16 if hexa else 10)
        if (
            cp < 0x20
            or 0x7F <= cp <= 0x9F
            or 0xD800 <= cp <= 0xDFFF
            or 0xFDD0 <= cp <= 0xFDEF
            or (cp & 0xFFFE) == 0xFFFE
            or cp > 0x10FFFF
        ):
            return False
    return True


def _simple_text(html: str) -> str | None:
    """The text of ``html`` when it is simple markup (see above), with a space before each
    block tag as ``_BLOCK_TAG`` marks them for the parser; None when the parser must read it."""
    if "<!" in html or "<?" in html or "\x00" in html:
        return None
    parts = _SIMPLE_TAG.split(html)  # text, end tag's name, start tag's name, text, ...
    out = []
    for i in range(0, len(parts), 3):
        t = parts[i]
        if "<" in t:
            return None  # a '<' that opens no tag of this grammar
        if "&" in t:
            if "&#" in t and not _ordinary_refs(t):
                return None
            t = unescape(t)
        out.append(t)
        if i + 1 < len(parts):
            name = (parts[i + 1] or parts[i + 2]).lower()
            if name not in _SIMPLE_TAGS:
                return None
            if name in _SIMPLE_BLOCKS:
                out.append(" ")
    return "".join(out)


def to_utc(dt: datetime | None) -> datetime | None:
    """Aware datetimes converted to UTC; naive ones taken to be UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _hash(*parts: str | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update((p or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def entry_key(
    guid: str | None,
    url: str | None,
    title: str | None,
    content: str | None,
    link: str | None = None,
) -> str:
    """Identity of an entry within its feed: GUID/id, else canonical link, else a content hash.
    A GUID that is the entry's link itself (RSS permalink GUIDs) counts as the link, so the
    identity does not depend on tracking parameters or on how a parser reports it."""
    if guid and guid.strip() and not (url and link and guid.strip() == link.strip()):
        return "g:" + guid.strip()[:1000]
    if url:
        return "u:" + url
    return "h:" + _hash(title, content)


def normalize_entry(raw: RawEntry, feed_id: int, base_url: str | None, now: datetime) -> Entry:
    url = canonical_url(raw.link, base_url)
    html = raw.summary_html or raw.content_html
    if html and len(html) > MAX_HTML_CHARS:
        html = html[:MAX_HTML_CHARS]
    title = html_to_text(raw.title)[:MAX_TITLE_CHARS]
    summary = html_to_text(html)[:MAX_SUMMARY_CHARS]
    published = to_utc(raw.published) or to_utc(raw.updated) or now
    if published > now + MAX_FUTURE:
        published = now
    published = published.replace(microsecond=0)  # the store keeps whole seconds
    updated = to_utc(raw.updated)
    if updated is not None:
        updated = updated.replace(microsecond=0)
        if updated == published:
            updated = None
    link = raw.link.strip()[:4000] if raw.link else None
    if link and base_url and url and not link.lower().startswith(("http://", "https://")):
        link = urljoin(base_url, link)
    if not title:
        title = summary[:120].rsplit(" ", 1)[0] if len(summary) > 120 else summary
    author = clean_text(raw.author)[:500] if raw.author else None
    return Entry(
        feed_id=feed_id,
        key=entry_key(raw.guid, url, raw.title, raw.content_html or raw.summary_html, raw.link),
        guid=raw.guid.strip()[:1000]
        if raw.guid and raw.guid.strip() != (raw.link or "").strip()
        else None,
        url=url,
        link=link,
        title=title,
        summary=summary,
        summary_html=html,
        author=author or None,
        published=published,
        updated=updated,
        content_hash=_hash(title, summary, html, url, author, updated and updated.isoformat()),
    )


def normalize_feed(parsed: ParsedFeed, feed_id: int, feed_url: str, now: datetime) -> list[Entry]:
    """Normalized entries of a parsed feed; a key seen twice in one document is kept once."""
    base = parsed.link if parsed.link and parsed.link.startswith("http") else feed_url
    seen: set[str] = set()
    out: list[Entry] = []
    for raw in parsed.entries:
        e = normalize_entry(raw, feed_id, base, now)
        if e.key in seen:
            continue
        seen.add(e.key)
        out.append(e)
    return out


def utcnow() -> datetime:
    """The one place that reads the clock; shells pass its value into the pure core."""
    return datetime.now(UTC)


def feed_url(url: str) -> str:
    """A subscribed feed's URL, lightly normalized so that the same feed is not added twice:
    lowercase scheme and host, default port and fragment dropped. Raises ValueError when the
    URL is not absolute http(s). Query and path are kept as given (some servers care)."""
    text = (url or "").strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{text!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or str(port) == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if parts.username:
        netloc = parts.username + (f":{parts.password}" if parts.password else "") + "@" + netloc
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
