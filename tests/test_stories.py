"""Stories end to end: outlets on a local server, rounds, corrections, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Response

from aggregator.api import Aggregator
from aggregator.errors import NotFoundError

from .conftest import rss

T = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

# (outlet, event, title, minutes after T)
ROUND1 = [
    ("planet", "quake", "Magnitude 6.8 earthquake strikes off northern Chile coast", 0),
    ("globe", "quake", "Strong 6.8 quake hits northern Chile near Antofagasta", 15),
    ("courier", "quake", "Chile earthquake: 6.8 tremor rocks Antofagasta region", 40),
    ("planet", "ecb", "ECB holds interest rates at 3.25% as inflation cools", 300),
    ("globe", "ecb", "European Central Bank leaves rates unchanged at 3.25%", 310),
    ("herald", "ecb", "ECB keeps rates on hold at 3.25% as euro zone inflation eases", 330),
    ("courier", "strike", "Rotterdam dock workers begin 48-hour strike over pay", 60),
    ("herald", "strike", "Rotterdam port workers strike for two days over pay", 90),
    ("planet", "bakery", "Local bakery wins national sourdough prize", 120),
]
# the next day: one more outlet on the ECB story, and a different Chile quake
ROUND2 = [
    ("courier", "ecb", "ECB leaves interest rates at 3.25% as inflation eases", 345),
    ("globe", "quake2", "Magnitude 5.1 earthquake shakes central Chile", 60 * 50),
    ("herald", "quake2", "Central Chile hit by magnitude 5.1 earthquake", 60 * 50 + 20),
]
OUTLETS = ("planet", "globe", "courier", "herald")


class Outlets:
    """Serves one RSS feed per outlet; ``publish`` adds items for the next fetch."""

    def __init__(self, server):
        self.items: dict[str, list[dict]] = {o: [] for o in OUTLETS}
        for o in OUTLETS:
            server.expect_request(f"/{o}.xml").respond_with_handler(
                lambda req, o=o: Response(
                    rss(o.title(), self.items[o]), content_type="application/rss+xml"
                )
            )
        self.urls = {o: server.url_for(f"/{o}.xml") for o in OUTLETS}

    def publish(self, rows):
        for outlet, event, title, minutes in rows:
            n = len(self.items[outlet])
            self.items[outlet].append(
                {
                    "title": title,
                    "guid": f"{outlet}-{event}-{n}",
                    "link": f"https://{outlet}.example/{event}/{n}",
                    "date": T + timedelta(minutes=minutes),
                }
            )


def grouping(agg: Aggregator) -> set[frozenset[str]]:
    """Stories as sets of 'outlet: title', independent of ids."""
    out = set()
    for s in agg.stories(limit=100):
        out.add(frozenset(f"{m.outlet}: {m.title}" for m in agg.story(s.id).members))
    return out


def expected(rows) -> set[frozenset[str]]:
    by_event: dict[str, set[str]] = {}
    for outlet, event, title, _ in rows:
        by_event.setdefault(event, set()).add(f"{outlet.title()}: {title}")
    return {frozenset(v) for v in by_event.values()}


@pytest.fixture
def setup(server, db_target):
    outlets = Outlets(server)
    clock = {"now": T + timedelta(hours=6)}
    agg = Aggregator.open(db=db_target, clock=lambda: clock["now"])
    for url in outlets.urls.values():
        agg.add_feed(url, check=False)
    yield agg, outlets, clock
    agg.close()


def test_two_rounds_give_exactly_the_expected_stories(setup):
    agg, outlets, clock = setup
    outlets.publish(ROUND1)
    s1 = agg.update()
    assert s1.new_entries == len(ROUND1) and s1.clustered == len(ROUND1)
    assert grouping(agg) == expected(ROUND1)
    outlets.publish(ROUND2)
    clock["now"] = T + timedelta(days=3)
    s2 = agg.update()
    assert s2.new_entries == len(ROUND2)
    assert grouping(agg) == expected(ROUND1 + ROUND2)
    ecb = next(s for s in agg.stories(limit=100) if "ECB" in s.title)
    assert ecb.source_count == 4 and ecb.entry_count == 4
    members = agg.story(ecb.id).members
    assert members[0].reason == "new" and all(
        m.reason.startswith(("similar", "same-url")) for m in members[1:]
    )
    assert all(m.score is not None for m in members)
    # a third round with nothing new changes nothing
    assert agg.update().clustered == 0
    assert grouping(agg) == expected(ROUND1 + ROUND2)


def test_story_queries(setup):
    agg, outlets, clock = setup
    outlets.publish(ROUND1)
    agg.update()
    assert [s.source_count for s in agg.stories(min_sources=3)] == [3, 3]
    assert {s.title for s in agg.stories(search="Rotterdam")} == {
        "Rotterdam dock workers begin 48-hour strike over pay"
    }
    only_planet = agg.stories(feeds=[outlets.urls["planet"]])
    assert len(only_planet) == 3
    newest = agg.stories(limit=1)[0]
    assert newest.title.startswith("ECB")
    clock["now"] = T + timedelta(hours=5, minutes=30)
    assert {s.title[:3] for s in agg.stories(since=timedelta(minutes=60))} == {"ECB"}


def test_manual_corrections_survive_later_rounds(setup):
    agg, outlets, clock = setup
    outlets.publish(ROUND1)
    agg.update()
    stories = {s.title[:8]: s for s in agg.stories(limit=100)}
    quake, strike, bakery = stories["Magnitud"], stories["Rotterda"], stories["Local ba"]

    # merge: the bakery story into the strike story (a user's choice, however odd)
    agg.merge_stories(strike.id, bakery.id)
    with pytest.raises(NotFoundError):
        agg.story(bakery.id)
    # split: the third quake report goes to its own story
    courier = next(m for m in agg.story(quake.id).members if m.outlet == "Courier")
    split = agg.split_story(quake.id, [courier.entry_id])
    # detach: one ECB report out of its story
    ecb = stories["ECB hold"]
    herald = next(m for m in agg.story(ecb.id).members if m.outlet == "Herald")
    detached = agg.detach_entry(herald.entry_id)

    # later rounds: new reports arrive for each story; corrections hold
    outlets.publish(
        [
            (
                "globe",
                "quake",
                "Chile quake of magnitude 6.8 near Antofagasta: aftershocks felt",
                100,
            ),
            ("herald", "ecb", "ECB holds rates at 3.25% as euro zone inflation cools", 350),
        ]
    )
    clock["now"] = T + timedelta(hours=8)
    agg.update()
    assert len(agg.story(strike.id).members) == 3  # still merged with the bakery
    assert [m.entry_id for m in agg.story(split.story.id).members] == [courier.entry_id]
    assert agg.story(split.story.id).members[0].pinned
    # the detached entry stays out (a new report may join it there: that is the user's story now)
    assert herald.entry_id in {m.entry_id for m in agg.story(detached.story.id).members}
    assert herald.entry_id not in {m.entry_id for m in agg.story(ecb.id).members}
    assert len(agg.story(quake.id).members) == 3  # two originals + the new report
    # and a fresh process (a new clusterer rebuilt from the store) respects them too
    agg.clustering.clusterer = None
    outlets.publish([("courier", "ecb", "Euro zone: ECB holds rates at 3.25%", 355)])
    agg.update()
    assert herald.entry_id in {m.entry_id for m in agg.story(detached.story.id).members}
    assert herald.entry_id not in {m.entry_id for m in agg.story(ecb.id).members}
    assert courier.entry_id not in {m.entry_id for m in agg.story(quake.id).members}


def test_correction_errors(setup):
    agg, outlets, _ = setup
    outlets.publish(ROUND1)
    agg.update()
    s = agg.stories(limit=100)
    bakery = next(x for x in s if x.title.startswith("Local"))
    with pytest.raises(NotFoundError):
        agg.detach_entry(agg.story(bakery.id).members[0].entry_id)  # already alone
    with pytest.raises(NotFoundError):
        agg.merge_stories(bakery.id, bakery.id)
    with pytest.raises(NotFoundError):
        agg.split_story(bakery.id, [999_999])
    with pytest.raises(NotFoundError):
        agg.story(999_999)


def test_explain_two_entries(setup):
    agg, outlets, _ = setup
    outlets.publish(ROUND1)
    agg.update()
    quake = agg.story(next(s.id for s in agg.stories(limit=100) if s.title.startswith("Magnitude")))
    a, b = quake.members[0].entry_id, quake.members[1].entry_id
    e = agg.explain(b, a)
    assert e.first.entry_id == a  # ordered by time
    assert e.would_merge and e.score >= e.threshold
    assert {t for t, _ in e.shared} >= {"6.8", "chile", "northern"}
    bakery = next(s.id for s in agg.stories(limit=100) if s.title.startswith("Local"))
    e2 = agg.explain(a, agg.story(bakery).members[0].entry_id)
    assert not e2.would_merge and e2.shared == ()


def test_cli_stories_story_explain_and_corrections(setup, db_target):
    agg, outlets, _ = setup
    outlets.publish(ROUND1)
    agg.update()
    db = db_target
    from click.testing import CliRunner

    from aggregator.cli import cli

    def run(*args, code=0):
        res = CliRunner().invoke(cli, ["--db", db, *args])
        assert res.exit_code == code, res.output
        return res

    rows = [
        json.loads(line)
        for line in run("stories", "--format", "ndjson", "--min-sources", "2").stdout.splitlines()
    ]
    assert [r["sources"] for r in rows] == [3, 2, 3]
    quake = next(r for r in rows if r["title"].startswith("Magnitude"))
    members = json.loads(run("story", str(quake["id"]), "--format", "json").stdout)
    assert [m["outlet"] for m in members] == ["Planet", "Globe", "Courier"]
    assert members[1]["why"].startswith("similar")
    out = run("explain", str(members[0]["entry_id"]), str(members[1]["entry_id"])).stdout
    assert "WOULD be merged" in out
    data = json.loads(
        run("explain", str(members[0]["entry_id"]), str(members[1]["entry_id"]), "--json").stdout
    )
    assert data["would_merge"] is True
    run("entry", "detach", str(members[2]["entry_id"]))
    assert len(json.loads(run("story", str(quake["id"]), "--format", "json").stdout)) == 2
    assert "no story 424242" in run("story", "424242", code=1).stderr
    res = run("story", "split", str(quake["id"]), str(members[1]["entry_id"]))
    assert "into new story" in res.stdout
    table = run("stories", "--format", "table", "--search", "Rotterdam").stdout
    assert "Rotterdam" in table and "Magnitude" not in table
    other = rows[1]["id"]
    assert "merged story" in run("story", "merge", str(quake["id"]), str(other)).stdout
    merged = json.loads(run("story", str(quake["id"]), "--format", "json").stdout)
    assert any(m["title"].startswith("Rotterdam") for m in merged)


# -- the clusterer carried between processes (SQLite: a snapshot next to the store) -------------


class Processes:
    """One store file, opened by one process after another (an Aggregator each)."""

    def __init__(self, server, tmp_path):
        self.outlets, self.db = Outlets(server), str(tmp_path / "s.sqlite")
        self.snapshot = tmp_path / "s.sqlite.clusterer"
        self.clock = {"now": T + timedelta(hours=6)}
        agg = self.open()
        for url in self.outlets.urls.values():
            agg.add_feed(url, check=False)
        self.outlets.publish(ROUND1)
        agg.update()
        agg.close()  # writes the snapshot

    def open(self) -> Aggregator:
        return Aggregator.open(db=self.db, clock=lambda: self.clock["now"])

    def second_round(self) -> Aggregator:
        """A new process: the next day's reports, one update; returns it still open."""
        agg = self.open()
        self.outlets.publish(ROUND2)
        self.clock["now"] = T + timedelta(days=3)
        assert agg.update().clustered == len(ROUND2)
        return agg


def test_the_next_process_reads_the_clusterer_instead_of_rebuilding_it(server, tmp_path):
    p = Processes(server, tmp_path)
    assert p.snapshot.stat().st_size > 0
    written = p.snapshot.stat().st_mtime_ns

    agg = p.open()
    assert agg.update().clustered == 0  # nothing new: the snapshot is not even read
    assert agg.clustering.restored == 0
    agg.close()
    assert p.snapshot.stat().st_mtime_ns == written  # nothing changed: not written again

    agg = p.second_round()
    assert agg.clustering.restored == 1  # read, not rebuilt
    assert grouping(agg) == expected(ROUND1 + ROUND2)
    agg.close()


def test_a_snapshot_older_than_the_stories_is_not_used(server, tmp_path):
    p = Processes(server, tmp_path)
    # a correction in another process, which does not cluster and so writes no snapshot
    agg = p.open()
    stories = {s.title[:8]: s for s in agg.stories(limit=100)}
    agg.merge_stories(stories["Rotterda"].id, stories["Local ba"].id)
    agg.close()

    agg = p.second_round()
    assert agg.clustering.restored == 0  # rebuilt from the store: the merge holds
    assert len(agg.story(stories["Rotterda"].id).members) == 3
    agg.close()


def test_a_damaged_snapshot_is_ignored(server, tmp_path):
    p = Processes(server, tmp_path)
    p.snapshot.write_bytes(p.snapshot.read_bytes()[:-40])  # cut short, as by a full disk

    agg = p.second_round()
    assert agg.clustering.restored == 0
    assert grouping(agg) == expected(ROUND1 + ROUND2)
    agg.close()
    assert p.snapshot.stat().st_size > 0  # and replaced by a whole one
    agg = p.open()
    p.outlets.publish([("courier", "ecb", "Euro zone: ECB holds rates at 3.25%", 355)])
    agg.update()
    assert agg.clustering.restored == 1
    agg.close()


def test_every_story_row_agrees_with_its_members_after_rounds_and_corrections(setup):
    """The stored aggregates (counts, span, representative = earliest member) are recomputed
    from the entries whenever a story changes: clustering, merge, split."""
    agg, outlets, clock = setup
    outlets.publish(ROUND1)
    agg.update()
    outlets.publish(ROUND2)
    clock["now"] = T + timedelta(days=3)
    agg.update()
    big = sorted(agg.stories(limit=100), key=lambda s: (-s.entry_count, s.id))
    agg.merge_stories(big[0].id, big[1].id)
    members = agg.story(big[0].id).members
    agg.split_story(big[0].id, [members[0].entry_id, members[-1].entry_id])
    stories = agg.stories(limit=100)
    assert sum(s.entry_count for s in stories) == len(ROUND1) + len(ROUND2)
    for s in stories:
        ms = agg.story(s.id).members
        first = min(ms, key=lambda m: (m.published, m.entry_id))
        assert (s.entry_count, s.source_count) == (len(ms), len({m.feed_id for m in ms}))
        assert (s.first_seen, s.last_updated) == (first.published, max(m.published for m in ms))
        assert (s.rep_entry_id, s.title) == (first.entry_id, first.title)
