"""Where a cold round's CPU goes: each stage of the pipeline, alone, on the peer benchmark's feeds.

    python bench/run_bench.py --feeds 1000 --tools aggregator --keep /tmp/keep
    python bench/cpu_budget.py /tmp/keep/bench-1000-*
    python bench/cpu_budget.py /tmp/keep/bench-1000-* --repeat 5 --feeds 200

A cold round of N feeds runs these stages in two processes at once (docs/ARCHITECTURE.md), so
its profile mixes them, and py-spy's sampling slows what it samples. Here each one runs by
itself, in this process, over the same data, as the round calls it, and reports its CPU seconds
(the median of ``--repeat`` runs, each on a fresh store) and microseconds per entry:

- parse      ``parse.parse_feed`` of every feed file the bench's nginx serves (its ``www``)
- normalize  ``normalize.normalize_feed`` of each parsed feed
- write      ``pipeline.write_prepared``, ``PARSE_BATCH`` feeds to a transaction, into a new
             store opened as a round's worker opens it (``bulk``): the feed's state, its
             entries, its next check; the index of entries by time built at the end, as a
             first round builds it (``store.defer_indexes``)
- index      ``store.index_pending``: the full-text index of the entries written
- features   ``store.unclustered_items`` + ``text.features`` + ``text.pack_many``, as a worker
             prepares the clustering stage's batches (``clustering.prefetched``)
- place      ``Clusterer.add_many`` of those packed features, in clustering order
- apply      ``store.apply_clustering`` of the assignments, 10,000 at a time
             (``--write-batch``), each to its story as it ends up (the merges go with the
             first chunk; the stage sends each batch's with that batch)
- snapshot   ``Clusterer.dump`` to memory (a one-shot round writes it at its end)

Not here: fetching (``bench/fetch_layers.py`` times the HTTP layer), starting the round's
processes and what passes between them. The sum is a floor for the round's CPU; run
``run_bench.py`` for the round itself. The table goes to stdout and the figures, with which
builds ran, to ``bench/results/cpu-budget-<N>.json``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

STAGES = ("parse", "normalize", "write", "index", "features", "place", "apply", "snapshot")
# entries per batch the worker prepares (features) and per apply_clustering (apply), as the
# stage's full batches
BATCH = 10_000


def feed_files(bench_dir: Path, limit: int | None) -> list[Path]:
    """The feed files of a kept bench run, in the order of their numbers."""
    www = bench_dir / "www"
    files = [p for p in www.iterdir() if p.name.startswith("feed") and p.is_file()]
    if not files:
        raise SystemExit(f"error: no feed files in {www}; keep a bench run with --keep")
    files.sort(key=lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0))
    return files[:limit] if limit else files


def one_run(
    files: list[Path], bodies: list[bytes], now: datetime, write_batch: int = BATCH
) -> tuple[dict, dict]:
    """Every stage once, on a fresh store: (CPU seconds of each, what to report besides)."""
    from aggregator.clustering import _items, prefetched
    from aggregator.config import Settings
    from aggregator.dedup.cluster import Clusterer
    from aggregator.models import FetchResult, Outcome
    from aggregator.normalize import normalize_feed
    from aggregator.parse import parse_feed
    from aggregator.pipeline import PARSE_BATCH, write_prepared
    from aggregator.store import open_store

    settings = Settings()
    cs = settings.cluster
    cpu: dict[str, float] = {}

    def timed(stage: str, fn):
        # what the stages before made and keep is out of the collector's passes: a round's
        # processes do not hold every feed's entries as this one does (at N = 5000 the passes
        # over them made normalizing look 17% dearer per entry: 28.3 us against 24.2)
        gc.collect()
        gc.freeze()
        began = time.process_time()
        out = fn()
        cpu[stage] = time.process_time() - began
        return out

    urls = [f"http://127.0.0.1/{p.name}" for p in files]
    parsed = timed(
        "parse", lambda: [parse_feed(b, u, None) for b, u in zip(bodies, urls, strict=True)]
    )
    with tempfile.TemporaryDirectory(prefix="cpu-budget-") as tmp:
        store = open_store(Path(tmp) / "budget.sqlite", bulk=True)
        try:
            ids = [store.add_feed(u, None, now).id for u in urls]
            entries = timed(
                "normalize",
                lambda: [
                    normalize_feed(p, i, u, now) for p, i, u in zip(parsed, ids, urls, strict=True)
                ],
            )
            prepared = [
                ((FetchResult(i, Outcome.OK, u, status_code=200), p, e, None), now)
                for i, u, p, e in zip(ids, urls, parsed, entries, strict=True)
            ]

            def write() -> int:
                n = 0
                store.defer_indexes()  # (the store is empty: as a first round's)
                for at in range(0, len(prepared), PARSE_BATCH):
                    done = write_prepared(store, prepared[at : at + PARSE_BATCH], settings)
                    n += sum(r.new_entries for r in done)
                store.restore_indexes()
                return n

            written = timed("write", write)
            timed("index", store.index_pending)
            queue = store.unclustered_ids()
            rows = timed(
                "features",
                lambda: [
                    row
                    for at in range(0, len(queue), BATCH)  # (the stage's full batches)
                    for row in prefetched(
                        store, queue[at : at + BATCH], cs.summary_tokens, cs.summary_weight
                    )
                ],
            )
            items = _items(rows)
            clusterer = Clusterer(cs)
            placed = timed("place", lambda: clusterer.add_many(items))
            merges = [(gone, clusterer.resolve(gone)) for gone in clusterer.merged_into]
            assignments = [
                (a.entry_id, clusterer.resolve(a.story_id), a.score, a.reason) for a in placed
            ]

            def apply() -> None:
                for at in range(0, len(assignments), write_batch):
                    chunk = assignments[at : at + write_batch]
                    store.apply_clustering(chunk, merges if at == 0 else [], now)

            timed("apply", apply)
            timed("snapshot", lambda: clusterer.dump(io.BytesIO()))
            left = len(store.unclustered_ids())
        finally:
            store.close()
            gc.unfreeze()
    if left:
        raise SystemExit(f"error: {left} entries left without a story after apply")
    return cpu, {"entries": written, "stories": len(clusterer.stories)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_dir", type=Path, help="a kept bench run (run_bench.py --keep DIR)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the table has their medians")
    ap.add_argument("--feeds", type=int, default=None, help="the first N feeds (all by default)")
    ap.add_argument(
        "--write-batch",
        type=int,
        default=BATCH,
        help="assignments to a write in the apply stage (default: %(default)s)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        raise SystemExit("error: --repeat must be at least 1")

    from aggregator.dedup import cluster, text

    files = feed_files(args.bench_dir, args.feeds)
    bodies = [p.read_bytes() for p in files]
    now = datetime.now(UTC)
    runs, info = [], {}
    for r in range(args.repeat):
        cpu, info = one_run(files, bodies, now, args.write_batch)
        runs.append(cpu)
        print(f"run {r + 1} of {args.repeat}: {sum(cpu.values()):.2f} s of CPU", file=sys.stderr)
    med = {s: statistics.median(run[s] for run in runs) for s in STAGES}
    total = sum(med.values())
    n = info["entries"]
    print(f"{len(files)} feeds, {n} entries, {info['stories']} stories; medians of {args.repeat}")
    print(f"clusterer: {cluster.IMPLEMENTATION}, features: {text.IMPLEMENTATION}")
    print(f"{'stage':10s} {'cpu s':>7s} {'us/entry':>9s} {'share':>6s}")
    for s in STAGES:
        print(f"{s:10s} {med[s]:7.3f} {med[s] / n * 1e6:9.1f} {med[s] / total:6.1%}")
    print(f"{'sum':10s} {total:7.3f} {total / n * 1e6:9.1f}")
    out = HERE / "results" / f"cpu-budget-{len(files)}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "feeds": len(files),
                **info,
                "clusterer": cluster.IMPLEMENTATION,
                "features": text.IMPLEMENTATION,
                "median_cpu_s": {s: round(med[s], 4) for s in STAGES},
                "runs": [{s: round(run[s], 4) for s in STAGES} for run in runs],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
