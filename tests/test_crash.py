"""Crash safety: `aggregator run` killed with SIGKILL at random moments, restarted, and the
store checked: intact, every served entry stored exactly once, nothing committed lost."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Response

from .conftest import rss

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("AGGREGATOR_KILLS", "50"))
CONFIG = """
[schedule]
default_interval_minutes = 0.01
min_interval_minutes = 0.01
max_interval_minutes = 0.02
jitter = 0.0
[daemon]
tick_seconds = 0.05
"""


class GrowingFeeds:
    """Feeds whose entries only grow: each fetch may publish one more entry."""

    def __init__(self, server, n: int):
        self.lock = threading.Lock()
        self.items: dict[int, list[dict]] = {i: [] for i in range(n)}
        self.served: set[str] = set()
        self.start = datetime.now(UTC) - timedelta(hours=1)
        for i in range(n):
            server.expect_request(f"/f{i}.xml").respond_with_handler(
                lambda req, i=i: self.respond(i)
            )

    def respond(self, i: int) -> Response:
        with self.lock:
            items = self.items[i]
            if len(items) < 40:
                k = len(items)
                items.append(
                    {
                        "title": f"Feed {i} headline {k} about topic{i}x{k % 7}",
                        "guid": f"{i}-{k}",
                        "link": f"https://f{i}.example/{k}",
                        "description": f"<p>Body {i} {k}</p>",
                        "date": self.start + timedelta(seconds=k * 13 + i),
                    }
                )
            self.served.update(it["guid"] for it in items)
            body = rss(f"F{i}", list(reversed(items)))
        return Response(body, content_type="application/rss+xml")


def count(db) -> int:
    with sqlite3.connect(db, timeout=10) as c:
        return c.execute("SELECT count(*) FROM entries").fetchone()[0]


def test_sigkill_at_random_moments_loses_nothing(server, tmp_path):
    feeds = GrowingFeeds(server, 12)
    db = tmp_path / "s.sqlite"
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    base = [sys.executable, "-m", "aggregator", "--db", str(db), "--config", str(cfg)]
    for i in range(12):
        subprocess.run(
            [*base, "feeds", "add", "--no-check", server.url_for(f"/f{i}.xml")],
            check=True,
            capture_output=True,
        )
    rng = random.Random(1234)
    seen = 0
    kills = 0
    started = time.monotonic()
    for _ in range(KILLS):
        p = subprocess.Popen(
            [*base, "run", "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.2))  # imports take ~0.3 s: kills land in every phase
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        kills += 1
        now = count(db)
        assert now >= seen, "committed entries were lost"
        seen = now
    elapsed = time.monotonic() - started
    # a last clean round picks up whatever the kills interrupted
    subprocess.run([*base, "update", "--no-progress"], check=True, capture_output=True)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [k for (k,) in c.execute("SELECT key FROM entries")]
        assert len(keys) == len(set(keys))
        stored = {k[2:] for k in keys}
        assert stored == feeds.served, (len(stored), len(feeds.served))
        assert c.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
        assert (
            c.execute(
                "SELECT count(*) FROM entries WHERE story_id NOT IN (SELECT id FROM stories)"
            ).fetchone()[0]
            == 0
        )
        assert (
            c.execute(
                "SELECT count(*) FROM stories WHERE rep_entry_id NOT IN (SELECT id FROM entries)"
            ).fetchone()[0]
            == 0
        )
        assert (
            c.execute(
                "SELECT count(*) FROM stories s WHERE entry_count !="
                " (SELECT count(*) FROM entries e WHERE e.story_id = s.id)"
            ).fetchone()[0]
            == 0
        )
    print(
        f"\n{kills} SIGKILLs in {elapsed:.0f}s; {len(feeds.served)} entries served, all stored once"
    )
    assert kills >= min(KILLS, 50) and len(feeds.served) > 100
