"""Clustering speed and memory on generated entries (the pure clusterer, one core).

    python bench/cluster_speed.py                 # 100,000 entries
    python bench/cluster_speed.py 100000 1000000  # several sizes, one process each

For each size it reports entries/s (CPU time of the clustering loop only, so the 2-core
machine's noise matters less), peak RSS of the process, stories found and B-cubed against the
generator's labels. Entries are generated in memory by gen_entries.py's generator.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def run_one(n: int, days: float | None, name_syllables: int = 4) -> dict:
    from gen_entries import generate

    from aggregator.dedup import metrics
    from aggregator.dedup.cluster import IMPLEMENTATION, Clusterer, Item

    buf = io.StringIO()
    generate(n, days or max(1.0, n / 30_000), 1, buf, name_syllables)
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    del buf
    items = [
        Item(
            i,
            r["source"],
            r["url"],
            r["title"],
            r["summary"],
            datetime.fromisoformat(r["published"].replace("Z", "+00:00")),
        )
        for i, r in enumerate(rows)
    ]
    gold = [r["label"] for r in rows]
    del rows
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = Clusterer()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    assigned = [a.story_id for a in c.add_many(items)]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pred = [c.resolve(s) for s in assigned]
    bp, br, bf = metrics.bcubed(gold, pred)
    return {
        "entries": n,
        "clusterer": IMPLEMENTATION,
        "name_syllables": name_syllables,
        "cpu_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "entries_per_cpu_second": round(n / cpu),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_clustering_mb": round(rss_before / 1024),
        "active_stories_at_end": len(c.stories),
        "stories": len(set(pred)),
        "gold_stories": len(set(gold)),
        "bcubed": {"precision": round(bp, 3), "recall": round(br, 3), "f1": round(bf, 3)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="clustering speed on generated entries")
    ap.add_argument("sizes", nargs="*", type=int, default=[100_000])
    ap.add_argument("--days", type=float, default=None, help="time span (default n/30000 days)")
    ap.add_argument("--name-syllables", type=int, default=4, help="see gen_entries.py")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.sizes[0], args.days, args.name_syllables)))
        return
    results = []
    for n in args.sizes:  # one process per size, so peak RSS is per size
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--name-syllables",
            str(args.name_syllables),
        ] + (["--days", str(args.days)] if args.days else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out))
        r = results[-1]
        print(
            f"{r['entries']:>9,} entries  {r['entries_per_cpu_second']:>7,}/s CPU  "
            f"peak RSS {r['peak_rss_mb']:>5} MB  stories {r['stories']:,} (gold {r['gold_stories']:,})  "
            f"B3 F1 {r['bcubed']['f1']}  ({r['clusterer']})",
            flush=True,
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
