"""Build a large store for query benchmarks, and time the queries.

    python bench/gen_store.py /tmp/big.sqlite --entries 1000000     # build (a few minutes)
    python bench/gen_store.py /tmp/big.sqlite --query                # time queries on it

The store is written through the store's own schema (migrations): 1,000 feeds, entries spread
over 90 days, grouped into stories of 1-8 entries, story aggregates filled in, the full-text
index built by the store's batch indexer. `--query` times, in-process (median of 7 runs):
`stories --since 24h`, `stories --since 24h --min-sources 3`, `entries --since 24h`, and
`search` for a common and a rare word, each returning up to 50 rows; then the same commands as
a user types them (`aggregator --db PATH stories --since 24h`, ...), each a new process, so that
start-up is in the figure (median of 7 runs, wall time).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.store import SQLiteStore

WORDS = (
    "market council election storm court energy school police budget trade union health "
    "transport housing water festival vaccine airline museum wildfire parliament bank "
    "football singer heatwave privacy inflation strike quake rescue"
).split()


def build(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    store = SQLiteStore(path)
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO feeds (id, url, title, added_at) VALUES (?, ?, ?, ?)",
        [
            (i, f"https://outlet{i}.example/feed", f"Outlet {i}", int(now.timestamp()))
            for i in range(1, 1001)
        ],
    )
    db.execute("COMMIT")
    span = 90 * 86400
    entry_id = story_id = 0
    batch: list[tuple] = []
    stories: list[tuple] = []
    t0 = time.time()
    while entry_id < n:
        story_id += 1
        size = min(n - entry_id, rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 8)))
        start = now.timestamp() - rng.uniform(0, span)
        topic = [*rng.sample(WORDS, 3), f"name{rng.randrange(200_000)}"]
        first = last = None
        feeds = set()
        for k in range(size):
            entry_id += 1
            feed = rng.randrange(1, 1001)
            feeds.add(feed)
            published = int(start + k * rng.uniform(60, 3600))
            title = " ".join(rng.sample(topic, 3) + rng.sample(WORDS, 4)).capitalize()
            batch.append(
                (
                    entry_id,
                    feed,
                    f"g:{entry_id}",
                    f"https://outlet{feed}.example/{entry_id}",
                    title,
                    f"{title}. " + " ".join(rng.choices(WORDS, k=30)),
                    published,
                    published,
                    published,
                    "h",
                    story_id,
                    1.0,
                    "new" if k == 0 else "similar",
                )
            )
            first = published if first is None else min(first, published)
            last = published if last is None else max(last, published)
        stories.append(
            (story_id, batch[-size][4], entry_id - size + 1, first, last, size, len(feeds), first)
        )
        if len(batch) >= 50_000:
            _flush(db, batch, stories)
            batch, stories = [], []
            print(f"  {entry_id:,} entries ({time.time() - t0:.0f}s)", flush=True)
    _flush(db, batch, stories)
    t1 = time.time()
    indexed = store.index_pending()
    print(
        f"built {entry_id:,} entries in {story_id:,} stories in {t1 - t0:.0f}s; "
        f"full-text index of {indexed:,} entries in {time.time() - t1:.0f}s"
    )
    store.close()


def _flush(db, batch, stories) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO entries (id, feed_id, key, url, title, summary, published, first_seen,"
        " last_changed, content_hash, story_id, join_score, join_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    db.executemany(
        "INSERT INTO stories (id, title, rep_entry_id, first_seen, last_updated, entry_count,"
        " source_count, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        stories,
    )
    db.execute("COMMIT")


def query(path: Path) -> None:
    from aggregator.api import Aggregator
    from aggregator.config import Settings

    agg = Aggregator(SQLiteStore(path, readonly=True), Settings())
    n = agg.store.stats().entries
    day = timedelta(hours=24)
    cases = {
        "stories --since 24h": lambda: agg.stories(since=day, limit=50),
        "stories --since 24h --min-sources 3": lambda: agg.stories(
            since=day, min_sources=3, limit=50
        ),
        "entries --since 24h": lambda: agg.entries(since=day, limit=50),
        "search 'budget' (common word)": lambda: agg.search("budget", limit=50),
        "search 'name12345' (rare word)": lambda: agg.search("name12345", limit=50),
        "search 'budget' --stories": lambda: agg.search("budget", limit=50, stories=True),
    }
    print(f"{n:,} entries in {path}")
    for name, fn in cases.items():
        times = []
        for _ in range(7):
            t = time.perf_counter()
            rows = fn()
            times.append(time.perf_counter() - t)
        print(
            f"  {name:40s} median {statistics.median(times) * 1000:7.1f} ms  "
            f"max {max(times) * 1000:7.1f} ms  ({len(rows)} rows)"
        )
    agg.close()
    print("as commands (a new process each: start-up, query, output)")
    commands = [
        ["stories", "--since", "24h"],
        ["stories", "--since", "24h", "--min-sources", "3"],
        ["entries", "--since", "24h"],
        ["search", "budget"],
        ["search", "budget", "--stories"],
    ]
    for args in commands:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "aggregator", "--db", str(path), *args],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            times.append(time.perf_counter() - t)
        print(
            f"  aggregator {' '.join(args):29s} median {statistics.median(times) * 1000:7.1f} ms"
            f"  max {max(times) * 1000:7.1f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description="build a large store; time queries on it")
    ap.add_argument("path", type=Path)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--query", action="store_true", help="only time the queries")
    args = ap.parse_args()
    if not args.query:
        if args.path.exists():
            sys.exit(f"{args.path} exists; remove it first")
        build(args.path, args.entries)
    query(args.path)


if __name__ == "__main__":
    main()
