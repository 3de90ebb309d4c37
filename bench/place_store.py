"""Place the entries of a store with the clusterer alone, as a round's clustering stage gets
them: in clustering order, with their features computed and packed as a worker sends them.

    python bench/run_bench.py --feeds 1000 --tools aggregator --keep /tmp/keep
    python bench/place_store.py /tmp/keep/bench-1000-*/aggregator/aggregator.sqlite
    python bench/place_store.py STORE --entries 20000 --rounds 3

The store is read, never written (its entries are read whatever their stories). For each round
it reports the CPU seconds of ``Clusterer.add_many`` over all the entries, the stories made,
which build ran, and a digest of every entry's story and reason: two versions of the clusterer
that place alike give the same digest. ``AGGREGATOR_PURE_PYTHON=1`` runs the pure module. With
``--no-place`` it reads and unpacks but places nothing (the baseline to subtract under
``valgrind --tool=callgrind``). The packed features are kept in ``--cache`` (default: next to
the store) so that later runs skip computing them. With ``--snapshot`` it then writes the
clusterer's snapshot body (``Clusterer.dump``) to memory and reads it back (``load``), each
round, and reports the CPU of each and the size.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import resource
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def packed_rows(store: Path, limit: int | None) -> list[tuple]:
    """(entry id, feed id, url, published, packed features), in clustering order."""
    from aggregator.clustering import _packed_rows
    from aggregator.dedup.base import ClusterSettings
    from aggregator.models import ClusterItem

    s = ClusterSettings()
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    sql = "SELECT id, feed_id, url, title, summary, published FROM entries ORDER BY published, id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    cursor = db.execute(sql)
    out = []
    while batch := cursor.fetchmany(10_000):  # (packed 10,000 at a time, as the stage's batches)
        entries = (
            ClusterItem(eid, feed, url, title, summary, datetime.fromtimestamp(published, UTC))
            for eid, feed, url, title, summary, published in batch
        )
        out += _packed_rows(entries, s.summary_tokens, s.summary_weight)
    return out


def place(rows: list[tuple]):
    """(the clusterer that placed ``rows``, what to report of it)"""
    from aggregator.clustering import _items
    from aggregator.dedup.cluster import IMPLEMENTATION, Clusterer

    items = _items(rows)
    c = Clusterer()
    cpu = time.process_time()
    out = c.add_many(items)
    cpu = time.process_time() - cpu
    digest = hashlib.sha1(
        repr([(a.entry_id, c.resolve(a.story_id), a.reason) for a in out]).encode()
    ).hexdigest()
    return c, {
        "clusterer": IMPLEMENTATION,
        "entries": len(items),
        "cpu_s": round(cpu, 3),
        "stories": len(c.stories),
        "digest": digest[:12],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def snapshot(c) -> dict:
    """CPU seconds to dump ``c`` to memory and to load it back, and the dump's size. (Not the
    memory a loaded copy takes: this process reuses what placing freed. Load a snapshot file in
    a new process for that.)"""
    from aggregator.dedup.base import ClusterSettings
    from aggregator.dedup.cluster import Clusterer

    buf = io.BytesIO()
    cpu = time.process_time()
    c.dump(buf)
    dump_s = time.process_time() - cpu
    buf.seek(0)
    cpu = time.process_time()
    loaded = Clusterer.load(buf, ClusterSettings())
    load_s = time.process_time() - cpu
    assert loaded.stories.keys() == c.stories.keys()
    return {
        "dump_cpu_s": round(dump_s, 3),
        "load_cpu_s": round(load_s, 3),
        "size_mb": round(len(buf.getvalue()) / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="a SQLite store (a kept bench run's)")
    ap.add_argument("--entries", type=int, default=None, help="the first N (all by default)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-place", action="store_true", help="read and unpack only")
    ap.add_argument("--snapshot", action="store_true", help="then time dump and load")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    cache = args.cache or args.store.with_name(
        f"{args.store.name}.packed-{args.entries or 'all'}.pickle"
    )
    if cache.exists():
        rows = pickle.loads(cache.read_bytes())
    else:
        rows = packed_rows(args.store, args.entries)
        cache.write_bytes(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
    if args.no_place:
        from aggregator.clustering import _items

        print(json.dumps({"entries": len(_items(rows)), "placed": False}))
        return
    for _ in range(args.rounds):
        c, report = place(rows)
        if args.snapshot:
            report.update(snapshot(c))
        print(json.dumps(report))
        del c


if __name__ == "__main__":
    main()
