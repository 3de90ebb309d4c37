from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import normalize
from aggregator.models import RawEntry
from aggregator.normalize import (
    _full_canonical_url,
    _plain_canonical_url,
    canonical_url,
    clean_text,
    entry_key,
    feed_url,
    html_to_text,
    normalize_entry,
    to_utc,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#section", "https://example.com/a"),
        ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed&id=7", "https://example.com/a?id=7"),
        ("https://example.com/a?fbclid=x&gclid=y&mc_cid=1&mc_eid=2", "https://example.com/a"),
        ("https://example.com/a?UTM_Campaign=x&p=1", "https://example.com/a?p=1"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/a%7eb", "https://example.com/a~b"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("  https://example.com/x  ", "https://example.com/x"),
        ("https://EXAMPLE.com./x", "https://example.com/x"),
        ("ftp://example.com/a", None),
        ("mailto:someone@example.com", None),
        ("javascript:alert(1)", None),
        ("", None),
        (None, None),
        ("https://example.com:99999/x", None),
    ],
)
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_canonical_url_resolves_relative_links():
    assert (
        canonical_url("/news/1?utm_source=x", "https://site.example/feed")
        == "https://site.example/news/1"
    )
    assert (
        canonical_url("item.html", "https://site.example/a/feed.xml")
        == "https://site.example/a/item.html"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.com:443/feed.xml#x", "https://example.com/feed.xml"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/feed?b=1&a=2", "http://example.com/feed?b=1&a=2"),
    ],
)
def test_feed_url(url, expected):
    assert feed_url(url) == expected


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "example.com/feed", "ftp://x/y", "http://", ""]
)
def test_feed_url_rejects(url):
    with pytest.raises(ValueError):
        feed_url(url)


@pytest.mark.parametrize(
    ("guid", "url", "title", "content", "prefix"),
    [
        ("abc", "https://x/1", "t", "c", "g:abc"),
        ("  abc  ", None, None, None, "g:abc"),
        (None, "https://x/1", "t", "c", "u:https://x/1"),
        ("", "https://x/1", "t", "c", "u:https://x/1"),
        ("   ", "https://x/1", "t", "c", "u:https://x/1"),
        (None, None, "t", "c", "h:"),
    ],
)
def test_entry_key(guid, url, title, content, prefix):
    assert entry_key(guid, url, title, content).startswith(prefix)


def test_entry_key_hash_depends_on_title_and_content():
    a = entry_key(None, None, "title", "content")
    assert a == entry_key(None, None, "title", "content")
    assert a != entry_key(None, None, "title", "other content")
    assert a != entry_key(None, None, "other title", "content")


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("plain   text\n here", "plain text here"),
        ("<p>Hello &amp; <b>wor</b>ld</p><p>Next</p>", "Hello & world Next"),
        ("<script>alert(1)</script>Visible<style>p{color:red}</style>", "Visible"),
        ("a<br>b<br/>c", "a b c"),
        ("&lt;b&gt;not a tag&lt;/b&gt;", "<b>not a tag</b>"),
        ("caf&eacute; &#8212; &#x2019;", "café — ’"),
        ("ctrl\x00\x07chars\x1b", "ctrlchars"),
        ("", ""),
        (None, ""),
        ("<ul><li>one</li><li>two</li></ul>", "one two"),
    ],
)
def test_html_to_text(html, text):
    assert html_to_text(html) == text


def test_to_utc():
    assert to_utc(None) is None
    naive = datetime(2026, 1, 1, 10, 0)
    assert to_utc(naive) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    plus2 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert to_utc(plus2) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert to_utc(plus2).tzinfo is UTC


def _raw(**kw):
    base = dict(
        guid=None,
        link=None,
        title=None,
        summary_html=None,
        content_html=None,
        author=None,
        published=None,
        updated=None,
    )
    base.update(kw)
    return RawEntry(**base)


def test_entry_without_date_gets_first_seen_time():
    e = normalize_entry(_raw(title="x"), 1, None, NOW)
    assert e.published == NOW


def test_entry_with_far_future_date_is_clamped():
    e = normalize_entry(_raw(title="x", published=NOW + timedelta(days=400)), 1, None, NOW)
    assert e.published == NOW


def test_entry_html_title_and_summary_become_text_and_html_is_kept():
    e = normalize_entry(
        _raw(
            title="<b>Big</b> &amp; bold",
            summary_html="<p>Sum <i>mary</i></p>",
            link="https://x.example/a?utm_source=feed",
            guid="1",
        ),
        1,
        None,
        NOW,
    )
    assert e.title == "Big & bold"
    assert e.summary == "Sum mary"
    assert e.summary_html == "<p>Sum <i>mary</i></p>"
    assert e.url == "https://x.example/a"
    assert e.link == "https://x.example/a?utm_source=feed"


def test_changed_text_changes_content_hash_not_key():
    a = normalize_entry(_raw(guid="1", title="Old"), 1, None, NOW)
    b = normalize_entry(_raw(guid="1", title="New"), 1, None, NOW)
    assert a.key == b.key
    assert a.content_hash != b.content_hash


def test_title_falls_back_to_summary():
    e = normalize_entry(_raw(summary_html="<p>" + "word " * 60 + "</p>"), 1, None, NOW)
    assert e.title.startswith("word word")
    assert len(e.title) <= 120


# -- the short path for plain URLs gives what w3lib's full canonicalization gives -------------

_URL_PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "-",
        ".",
        "_",
        "~",
        "/",
        "%",
        "%7e",
        "%2F",
        "?",
        "&",
        "=",
        "#",
        ";",
        ":",
        "@",
        "!",
        "$",
        "'",
        "(",
        ")",
        "*",
        "+",
        ",",
        " ",
        "é",
        "utm_source=x",
        "a=1",
        "b=",
        "//",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP"]),
    host=st.sampled_from(
        [
            "example.com",
            "Example.com",
            "a-b.example",
            "xn--bcher-kva.example",
            "10.0.0.1",
            "a.b.",
            "bücher.example",
        ]
    ),
    port=st.sampled_from(["", ":80", ":443", ":8080", ":0080", ":99999", ":"]),
    rest=st.lists(_URL_PIECES, max_size=12).map("".join),
)
def test_plain_url_path_agrees_with_w3lib(scheme, host, port, rest):
    url = f"{scheme}://{host}{port}{rest}"
    plain = _plain_canonical_url(url)
    if plain is not None:
        assert plain == _full_canonical_url(url)


def test_plain_url_path_is_taken_for_common_links():
    # the short path must really be the common one, or it saves nothing
    for url in [
        "https://outlet1.example/2026/11/story-title-here?utm_source=rss&id=7",
        "http://www.example.com/news/world-12345678",
        "https://example.com:8443/a/b.html#comments",
    ]:
        assert _plain_canonical_url(url) == _full_canonical_url(url)


def test_plain_url_path_agrees_with_w3lib_on_the_corpus_links():
    """Every entry link in the shared feed corpus and the UCI sample: short path == full path
    wherever the short path answers."""
    import json
    import re
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not found (the shared data set is not on this machine)")
    links = set()
    for f in (data / "feeds").rglob("*"):
        if f.is_file():
            text = f.read_bytes().decode("utf-8", "replace")
            links.update(re.findall(r"https?://[^\s\"'<>]+", text))
    sample = data / "uci-news-aggregator-sample.jsonl"
    if sample.exists():
        with sample.open() as fh:
            links.update(json.loads(line)["url"] for line in fh)
    taken = 0
    for url in links:
        plain = _plain_canonical_url(url)
        if plain is not None:
            taken += 1
            assert plain == _full_canonical_url(url), url
    assert taken > len(links) // 2  # the short path is the common one here too


def test_clean_text_splits_where_the_regex_whitespace_class_matches():
    # clean_text folds with str.split(); it must treat as space exactly what \s does
    import re
    import sys

    ws = re.compile(r"\s")
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        assert c.isspace() == (ws.match(c) is not None), hex(cp)
    assert clean_text("  a \t\n b\u00a0c\u2003 d\x00e\x1f ") == "a b c de"


# -- simple markup read without the parser (normalize._simple_text) ------------------------------

# elements the parser treats specially: their markup must go to it
_SPECIAL = """table td tr pre listing script style textarea title select option svg math head body
html template xmp noscript frameset plaintext image nobr form button iframe caption ruby p1"""
_TAG_NAMES = [*sorted(normalize._SIMPLE_TAGS), *_SPECIAL.split()]
_PLAIN_REFS = """&amp; &amp &lt; &gt &copy &copy2024 &notit; &notin; &nbsp; &NotEqualTilde; &bogus;
& &# &#x; &amp;amp; &AMP; &ampx &#39; &#x27; &#8217 &#65 &#x41g &#173; &#x2028;"""
# numeric references html.unescape reads otherwise than HTML does
_ODD_REFS = """&#0; &#x80; &#150; &#13; &#12; &#x0a; &#xD800; &#xFDD0; &#xFFFE; &#1114112;
&#x110000; &#9999999999;"""
_REFS = [*_PLAIN_REFS.split(), *_ODD_REFS.split()]
_HTML_WS = st.sampled_from([" ", "\t", "\n", "\r", "\f", "\x0b", "", "  "])


def _cased(s: str):
    return st.sampled_from([s, s.upper(), s.capitalize()])


_ATTR_VALUE = st.one_of(
    st.text(st.sampled_from(list("ab >'<&/=;#")), max_size=6).map(lambda v: f'"{v}"'),
    st.text(st.sampled_from(list('ab >"<&/=')), max_size=6).map(lambda v: f"'{v}'"),
    st.text(st.sampled_from(list("ab>&/=`'\"<")), max_size=5),
)
_ATTR = st.builds(
    lambda w, name, eq, value: f"{w}{name}" + (f"{eq}{value}" if eq else ""),
    st.sampled_from([" ", "\n", "\x0b", "", "\t "]),
    st.sampled_from(["href", "alt", "data-x", 'a"b', "x'y", "c<d", "/", "=", "a/b"]),
    st.sampled_from(["", "=", " = ", "= "]),
    _ATTR_VALUE,
)
_START = st.builds(
    lambda name, attrs, w, close: f"<{name}{''.join(attrs)}{w}{close}>",
    st.sampled_from(_TAG_NAMES).flatmap(_cased),
    st.lists(_ATTR, max_size=3),
    _HTML_WS,
    st.sampled_from(["", "/"]),
)
_END = st.builds(
    lambda name, w: f"</{name}{w}>", st.sampled_from(_TAG_NAMES).flatmap(_cased), _HTML_WS
)
_ODD = st.sampled_from(["<!-- c -->", "<!x>", "<?x>", "</>", "</ p>", "< p>", "<3", "<", ">", "<p"])
_TEXT = st.text(
    st.sampled_from([*"ab c;#xé\u0301 \n\t\r\x0b\x01\u00a0", "\ufffe", "\x00", "&"]), max_size=8
)
_MARKUP = st.lists(
    st.one_of(_TEXT, _TEXT, st.sampled_from(_REFS), _START, _START, _END, _END, _ODD),
    max_size=14,
).map("".join)


def _as_stored(text: str) -> str:
    """What html_to_text makes of a document's text."""
    import unicodedata

    return clean_text(unicodedata.normalize("NFC", text))


def _parser_text(html: str) -> str:
    return _as_stored(normalize._parsed_text(normalize._BLOCK_TAG.sub(" <", html)))


@settings(max_examples=3000, deadline=None)
@given(_MARKUP)
def test_simple_markup_read_without_the_parser_gives_the_parsers_text(html):
    simple = normalize._simple_text(html)
    if simple is not None:
        assert _as_stored(simple) == _parser_text(html)


def test_no_two_simple_elements_move_text_when_nested_or_misnested():
    """The short path takes the text in document order: no pair of its elements may make the
    parser move text (as a table does with text beside its cells, or misnested formatting
    elements could)."""
    names = sorted(normalize._SIMPLE_TAGS)
    for a in names:
        for b in names:
            for html in (
                f"x<{a}>y<{b}>z</{b}>w</{a}>v",
                f"x<{a}>y<{b}>z</{a}>w</{b}>v",
                f"<{a}>x<{b}>y<{a}>z</{b}>w",
            ):
                got = normalize._simple_text(html)
                assert got is not None and _as_stored(got) == _parser_text(html), html


def test_simple_markup_in_the_feed_corpus_gives_the_parsers_text():
    """Every title and summary with markup in the shared corpus (297 real feeds) that the short
    path reads gives what the parser gives; and it reads most of them."""
    from aggregator.errors import ParseError
    from aggregator.parse import parse_feed

    from .conftest import SHARED_DATA

    feeds = SHARED_DATA / "feeds"
    if not (feeds / "INDEX.csv").exists():
        pytest.skip(f"feed corpus not found at {feeds}")
    texts = simple = 0
    for path in sorted(p for p in feeds.rglob("*") if p.is_file() and p.name != "INDEX.csv"):
        try:
            parsed = parse_feed(path.read_bytes(), "https://example.org/feed", None)
        except ParseError:
            continue
        for e in parsed.entries:
            for html in (e.title, e.summary_html, e.content_html):
                if not html or ("<" not in html and "&" not in html):
                    continue
                texts += 1
                got = normalize._simple_text(html)
                if got is not None:
                    simple += 1
                    assert _as_stored(got) == _parser_text(html), (path.name, html[:200])
    assert texts > 4000 and simple > texts // 2, (texts, simple)


@pytest.mark.parametrize(
    "html",
    [
        "<table><tr><td>a</td></tr></table>b",  # table text moves (foster parenting)
        "<pre>\nx</pre>",  # the newline after <pre> is dropped
        "a<!-- b -->c",
        "x < y",
        "<script>1</script>",
        "<textarea><b>raw</b></textarea>",
        "a&#xFDD0;b",  # kept by HTML, dropped by html.unescape
        '<a title="x"href=y>z',  # no space between two attributes
        "<p\x0bclass=x>y</p>",  # \v is no HTML whitespace
    ],
)
def test_other_markup_goes_to_the_parser(html):
    assert normalize._simple_text(html) is None
    assert html_to_text(html) == _parser_text(html)


def test_the_short_path_marks_the_block_tags_the_parser_is_given_marked():
    for name in normalize._SIMPLE_TAGS:
        for tag in (f"<{name}>", f"</{name}>", f"<{name.upper()} x=1>"):
            marked = normalize._BLOCK_TAG.match(tag) is not None
            assert marked == (name in normalize._SIMPLE_BLOCKS), tag
            assert normalize._simple_text(f"a{tag}b") == ("a b" if marked else "ab")


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_clean_text_drops_the_same_controls_when_it_skips_the_pattern(text):
    # (a printable text has no control character: clean_text does not search it for one)
    assert clean_text(text) == " ".join(normalize._CONTROL.sub("", text).split())
