"""Write a kept bench store's entries into a fresh store, as a round's worker writes them: in the
order they arrived (by id), a feed's entries together, several feeds a transaction. Prints the
CPU and wall seconds for each 50,000 entries and in all: the cost of the entries table's indexes
as it grows.

    python bench/run_bench.py --feeds 5000 --tools aggregator --keep /tmp/keep
    python bench/write_entries.py /tmp/keep/bench-5000-*/aggregator/aggregator.sqlite
    python bench/write_entries.py STORE --drop entries_published --rounds 2

The fresh store has the current schema (every migration); ``--drop INDEX`` drops that index of
it first, ``--create SQL`` runs that statement then (both repeatable): what one index costs, or
another layout. The queue's index before migration 8, for instance:

    python bench/write_entries.py STORE --drop entries_queue \
        --create "CREATE INDEX q ON entries (published, id) WHERE story_id IS NULL"

The kept store is only read.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = (
    "feed_id, key, guid, url, link, title, summary, summary_html, author, published, updated,"
    " content_hash, first_seen, last_changed"
)
STEP = 50_000  # entries per reported step


def write(
    rows: list[tuple], feeds: list[tuple], drop: list[str], create: list[str], per_commit: int
) -> dict:
    from aggregator.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="write-entries-") as tmp:
        store = SQLiteStore(Path(tmp) / "s.sqlite")
        db = store.db
        db.executemany("INSERT INTO feeds (id, url, added_at) VALUES (?, ?, ?)", feeds)
        for name in drop:
            db.execute(f"DROP INDEX {name}")
        for sql in create:
            db.execute(sql)
        db.commit()
        by_feed: dict[int, list[tuple]] = {}
        for r in rows:  # (in arrival order: a feed's entries come together)
            by_feed.setdefault(r[0], []).append(r)
        order = list(by_feed)
        insert = (
            f"INSERT INTO entries ({COLUMNS}) VALUES ({', '.join('?' * 14)})"
            " ON CONFLICT (feed_id, key) DO NOTHING"
        )
        steps, done = [], 0
        cpu, wall = time.process_time(), time.perf_counter()
        cpu0, wall0 = cpu, wall
        for i in range(0, len(order), per_commit):
            db.execute("BEGIN IMMEDIATE")
            for feed in order[i : i + per_commit]:
                db.executemany(insert, by_feed[feed])
                done += len(by_feed[feed])
            db.execute("COMMIT")
            if done >= STEP * (len(steps) + 1) or i + per_commit >= len(order):
                now_cpu, now_wall = time.process_time(), time.perf_counter()
                steps.append((round(now_cpu - cpu, 2), round(now_wall - wall, 2)))
                cpu, wall = now_cpu, now_wall
        total = (round(time.process_time() - cpu0, 2), round(time.perf_counter() - wall0, 2))
        store.close()
    return {
        "entries": done,
        "dropped": drop,
        "created": create,
        "cpu_s": total[0],
        "wall_s": total[1],
        "per_50000_cpu_s": [c for c, _ in steps],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="a SQLite store (a kept bench run's)")
    ap.add_argument("--drop", action="append", default=[], help="an index to drop first")
    ap.add_argument("--create", action="append", default=[], help="a statement to run then")
    ap.add_argument("--feeds-per-commit", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    src = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    rows = src.execute(f"SELECT {COLUMNS} FROM entries ORDER BY id").fetchall()
    feeds = src.execute("SELECT id, url, added_at FROM feeds").fetchall()
    src.close()
    for _ in range(args.rounds):
        print(json.dumps(write(rows, feeds, args.drop, args.create, args.feeds_per_commit)))


if __name__ == "__main__":
    main()
