"""Every real feed file in ../shared/data/feeds through parse + normalize: each one either yields
entries (maybe with a warning) or raises a typed ParseError. Nothing else may escape."""

from __future__ import annotations

import csv
import functools
import html
import re
from collections import Counter

import pytest

from aggregator.errors import ParseError
from aggregator.normalize import normalize_feed
from aggregator.parse import parse_feed

from .conftest import NOW, SHARED_DATA

FEEDS = SHARED_DATA / "feeds"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.corpus,
    pytest.mark.skipif(
        not (FEEDS / "INDEX.csv").exists(), reason=f"feed corpus not found at {FEEDS}"
    ),
]


def corpus_files():
    if not (FEEDS / "INDEX.csv").exists():
        return []
    with open(FEEDS / "INDEX.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        matches = list(FEEDS.glob(f"*/{row['file']}"))
        if matches:
            out.append((row, matches[0]))
    return out


MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€[\u0080-\u00bf™œ“”˜]|Â[\u00a0-\u00bf]")


def test_no_mojibake_of_our_own():
    """Text that looks like UTF-8 read as Latin-1 may be stored only when the feed itself
    carries it (publishers' own mojibake); the pipeline never creates it."""
    created = []
    for _row, path in corpus_files():
        body = path.read_bytes()
        try:
            entries = normalize_feed(
                parse_feed(body, "http://127.0.0.1/f"), 1, "http://127.0.0.1/f", NOW
            )
        except ParseError:
            continue
        source = html.unescape(body.decode("utf-8", "replace"))  # also &#195;&#182; references
        for e in entries:
            for text in (e.title, e.summary):
                for m in MOJIBAKE.finditer(text):
                    if m.group(0) not in source:
                        created.append((path.name, m.group(0), text[:60]))
    assert not created, created


@functools.cache
def classify(path):
    body = path.read_bytes()
    try:
        parsed = parse_feed(body, f"http://127.0.0.1/{path.name}")
    except ParseError as e:
        return "failed", str(e), 0
    entries = normalize_feed(parsed, 1, f"http://127.0.0.1/{path.name}", NOW)
    for e in entries:
        for text in (e.title, e.summary):
            assert "\x00" not in text
            text.encode("utf-8")  # valid Unicode (no lone surrogates)
    return ("partial" if parsed.warning else "ok"), parsed.warning, len(entries)


def test_every_corpus_file_parses_or_fails_typed():
    files = corpus_files()
    assert len(files) >= 290, "INDEX.csv lists files that are missing"
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    total_entries = 0
    for _row, path in files:
        kind, reason, n = classify(path)
        counts[kind] += 1
        total_entries += n
        if reason:
            reasons[reason.split(":")[0][:60]] += 1
    print(f"\ncorpus: {len(files)} files: {dict(counts)}; {total_entries} entries")
    for reason, n in reasons.most_common():
        print(f"  {n:4d}  {reason}")
    assert counts["ok"] + counts["partial"] > 0.8 * len(files)


def test_wellformed_files_with_items_yield_entries():
    """A file a strict XML parser accepts and that holds items must give entries."""
    missing = []
    for row, path in corpus_files():
        if row["wellformed"] == "True" and row["items"].isdigit() and int(row["items"]) > 0:
            kind, reason, n = classify(path)
            if n == 0:
                missing.append((path.name, kind, reason))
    assert not missing, missing


def test_fast_parser_reads_what_feedparser_reads():
    """Where the fast path (fastfeedparser) takes a real feed, the normalized entries are the
    ones feedparser gives; everything else falls back to feedparser."""
    from aggregator.parse import _parse_xml, parse_fast

    taken = 0
    for _row, path in corpus_files():
        body = path.read_bytes()
        if body.lstrip().startswith(b"<?xml"):
            body = body.lstrip(b" \t\r\n")
        fast = parse_fast(body)
        if fast is None:
            continue
        taken += 1
        url = f"http://127.0.0.1/{path.name}"
        slow = normalize_feed(_parse_xml(body, url, None), 1, url, NOW)
        quick = normalize_feed(fast, 1, url, NOW)
        fields = (
            "key",
            "guid",
            "url",
            "link",
            "title",
            "summary",
            "author",
            "published",
            "updated",
        )
        assert [tuple(getattr(e, f) for f in fields) for e in quick] == [
            tuple(getattr(e, f) for f in fields) for e in slow
        ], path.name
    print(f"\nfast path taken for {taken} corpus files, identical to feedparser")
    assert taken >= 5


def test_every_corpus_file_through_the_whole_pipeline(server, tmp_path):
    """Served locally, fetched, parsed, normalized, clustered and stored: every feed either
    stores entries or records a typed error; stored text is valid Unicode without control
    characters."""
    import re
    import sqlite3

    from werkzeug import Response

    from aggregator.api import Aggregator
    from aggregator.models import Outcome

    files = corpus_files()
    for i, (_row, path) in enumerate(files):
        ctype = "application/json" if path.suffix == ".json" else "application/xml"
        server.expect_request(f"/c/{i}").respond_with_handler(
            lambda req, path=path, ctype=ctype: Response(path.read_bytes(), content_type=ctype)
        )
    with Aggregator.open(db=tmp_path / "s.sqlite") as agg:
        for i in range(len(files)):
            agg.add_feed(server.url_for(f"/c/{i}"), check=False)
        summary = agg.update()
        feeds = agg.feeds()
    assert len(summary.results) == len(files)
    kinds = {o.value for o in Outcome}
    with_entries = failed = 0
    for f in feeds:
        assert f.last_status in kinds, (f.url, f.last_status)
        if f.entry_count:
            with_entries += 1
        else:
            assert f.last_status == Outcome.OK.value or f.last_error, f.url
            failed += f.last_status != Outcome.OK.value
    bad = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        for title, summary_text in c.execute("SELECT title, summary FROM entries"):
            for text in (title, summary_text):
                assert not bad.search(text), text[:80]
                text.encode("utf-8")
        assert c.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
    print(
        f"\nwhole pipeline: {len(files)} feeds, {with_entries} with entries, {failed} typed errors, "
        f"{summary.new_entries} entries, {summary.stories_touched} stories"
    )
    assert with_entries > 0.85 * len(files)
