"""Scale-out: three `aggregator run` processes share one PostgreSQL store and 300 local feeds.

Each round the feeds publish new entries and are made due; the server's access log must show
each feed fetched exactly once, the entry counts must be exact, and no canonical URL may be in
two stories. In the last round one worker is killed mid-round: the others finish its feeds
once its leases run out."""

from __future__ import annotations

import hashlib
import re
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from werkzeug import Request, Response

from aggregator.store import PostgresStore

from .conftest import Daemon, rss

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FEEDS = 300
PER_ROUND = 3  # entries each feed adds per round; one of them is a wire story others carry too
SHARED = 10  # distinct wire stories per round, each carried by FEEDS / SHARED feeds

CONCURRENCY = 8
# What a killed worker had claimed and not yet stored, and the others fetch again once its
# leases run out: its fetches (at most CONCURRENCY) and the fetched feeds waiting for its parsing
# process (at most 2 * CONCURRENCY, ``run_round``'s backlog when it offloads).
WINDOW = CONCURRENCY + 2 * CONCURRENCY

CONFIG = f"""
[fetch]
connect_timeout = 2.0
read_timeout = 5.0
total_timeout = 5.0
concurrency = {CONCURRENCY}
per_host = 0
[schedule]
default_interval_minutes = 600.0
min_interval_minutes = 600.0
jitter = 0.0
[daemon]
tick_seconds = 0.3
stop_timeout_seconds = 5.0
[store]
lease_seconds = 1.0
"""


def words(seed: str) -> str:
    """A headline of seven made-up words no other seed shares: these tests are about
    coordination, not about telling stories apart."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return " ".join("".join(chr(97 + int(c, 16)) for c in h[i : i + 7]) for i in range(0, 49, 7))


class Feeds:
    """300 feeds on one threaded local server; ``round`` decides what they carry."""

    def __init__(self, server):
        self.round = 0
        self.delay = 0.0
        self.start = datetime.now(UTC) - timedelta(hours=3)
        self.hits: list[tuple[int, str]] = []  # (round, path)
        self.lock = threading.Lock()
        server.expect_request(re.compile(r"^/f/\d+\.xml$")).respond_with_handler(self.handle)
        self.url = server.url_for("/f/{}.xml")

    def items(self, feed: int) -> list[dict]:
        out = []
        for r in range(1, self.round + 1):
            when = self.start + timedelta(minutes=20 * r)
            wire = feed % SHARED
            out.append(
                {
                    "title": words(f"wire {r} {wire}"),
                    "link": f"https://wire.example/r{r}/s{wire}?utm_source=f{feed}",
                    "guid": f"f{feed}-r{r}-wire",
                    "date": when,
                }
            )
            for k in range(PER_ROUND - 1):
                out.append(
                    {
                        "title": words(f"note {feed} {k} {r}"),
                        "link": f"https://o{feed}.example/r{r}/{k}",
                        "guid": f"f{feed}-r{r}-{k}",
                        "date": when,
                    }
                )
        return out

    def handle(self, request: Request) -> Response:
        feed = int(request.path.split("/")[-1].split(".")[0])
        with self.lock:
            self.hits.append((self.round, request.path))
        if self.delay:
            time.sleep(self.delay)
        return Response(rss(f"Outlet {feed}", self.items(feed)), mimetype="application/rss+xml")

    def fetched(self, rnd: int) -> Counter:
        with self.lock:
            return Counter(p for r, p in self.hits if r == rnd)


def wait_until(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last is True:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout}s (last: {last})")


def test_three_workers_share_the_feeds_and_survive_a_kill(server, pg_url, tmp_path):
    feeds = Feeds(server)
    store = PostgresStore(pg_url)
    for i in range(FEEDS):
        store.add_feed(feeds.url.format(i), None, datetime.now(UTC))
    store.close()
    admin = psycopg.connect(pg_url, autocommit=True)

    def count(sql: str) -> int:
        return admin.execute(sql).fetchone()[0]

    def settled(rnd: int, since: int):
        entries = count("SELECT count(*) FROM entries")
        unclustered = count("SELECT count(*) FROM entries WHERE story_id IS NULL")
        fetched = count(f"SELECT count(*) FROM feeds WHERE last_ok_at >= {since}")
        if entries == FEEDS * PER_ROUND * rnd and unclustered == 0 and fetched == FEEDS:
            return True
        return (entries, unclustered, fetched)

    def one_story_per_url():
        return admin.execute(
            "SELECT url FROM entries WHERE url IS NOT NULL GROUP BY url"
            " HAVING count(DISTINCT story_id) > 1"
        ).fetchall()

    def new_round(rnd: int) -> int:
        feeds.round = rnd
        since = int(time.time())
        admin.execute("UPDATE feeds SET next_check_at = 0")  # every feed is due now
        return since

    config = tmp_path / "workers.toml"
    config.write_text(CONFIG)
    since = new_round(1)
    workers = [Daemon(pg_url, config) for _ in range(3)]
    timings = {}
    for rnd in (1, 2):
        if rnd > 1:
            since = new_round(rnd)
        started = time.monotonic()
        wait_until(lambda r=rnd, s=since: settled(r, s), 90, f"round {rnd}")
        timings[rnd] = time.monotonic() - started
        hits = feeds.fetched(rnd)
        assert len(hits) == FEEDS and set(hits.values()) == {1}, hits.most_common(3)
        assert count("SELECT count(*) FROM feeds WHERE lease_owner IS NOT NULL") == 0
        assert one_story_per_url() == []
        wire = count(
            "SELECT count(DISTINCT story_id) FROM entries WHERE url LIKE 'https://wire.example/%'"
        )
        assert wire == SHARED * rnd

    # the work was shared: by the daemons' own logs, several workers fetched feeds (a round's
    # log line comes once its round has returned, which can be after the store has settled)
    def logged() -> list[int]:
        return [
            sum(len(rec.get("fetched", ())) for rec in list(w.lines) if rec.get("event") == "round")
            for w in workers
        ]

    wait_until(lambda: sum(logged()) == 2 * FEEDS or logged(), 30, "the rounds' log lines")
    per_worker = logged()
    assert sum(per_worker) == 2 * FEEDS and sum(n > 0 for n in per_worker) >= 2, per_worker
    assert all(w.proc.poll() is None for w in workers)

    # round 3: slow responses; one worker is killed mid-round
    feeds.delay = 0.25
    since = new_round(3)
    wait_until(lambda: len(feeds.fetched(3)) >= FEEDS // 4, 30, "a quarter of round 3")
    victim = workers[0]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    killed_at = time.monotonic()
    wait_until(lambda: settled(3, since), 120, "round 3 after the kill")
    recovered_in = time.monotonic() - killed_at
    hits = feeds.fetched(3)
    assert len(hits) == FEEDS  # every feed fetched ...
    twice = [p for p, n in hits.items() if n > 1]
    assert len(twice) <= WINDOW  # ... once, except what the victim had claimed, not stored
    assert count("SELECT count(*) FROM entries") == FEEDS * PER_ROUND * 3
    assert (
        count("SELECT count(*) FROM (SELECT feed_id, key FROM entries GROUP BY 1, 2) k")
        == FEEDS * PER_ROUND * 3
    )
    assert one_story_per_url() == []
    for w in workers[1:]:
        code, _ = w.stop()
        assert code == 0
    admin.close()
    print(
        f"\nscale-out: round 1 {timings[1]:.1f}s, round 2 {timings[2]:.1f}s"
        f" ({FEEDS / timings[2]:.0f} feeds/s with 3 workers); round 3 finished"
        f" {recovered_in:.1f}s after the kill; feeds fetched twice in round 3: {len(twice)};"
        f" feeds per worker in rounds 1-2: {per_worker}"
    )
