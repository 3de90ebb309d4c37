"""CPU of a round's conditional GETs through aggregator's network layer (``http_net``, asyncio
transports) against httpx's default one (httpcore over anyio), in the same run.

    python bench/fetch_layers.py                 # 1000 feeds, 8 rounds of each layer
    python bench/fetch_layers.py --feeds 5000 --rounds 4

The bench's feeds (feedgen_bench.py) are served by nginx on 127.0.0.1 (run_bench.Nginx); one
GET of each records its ETag and Last-Modified, then rounds of conditional GETs (every feed
answers 304) alternate between the two layers, each round a fresh ``fetch.FeedClient`` over
the same pool code (http_pool) and ``fetch_feed``, at ``--concurrency``. Process CPU time
(time.process_time) and wall time per round; medians and their ratio are printed and written
to bench/results/fetch-layers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpcore._backends.auto as httpcore_auto  # httpx's default layer (anyio under asyncio)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from feedgen_bench import write_feeds  # noqa: E402
from run_bench import Nginx, ensure_tools  # noqa: E402

from aggregator import http_pool  # noqa: E402
from aggregator.config import FetchSettings  # noqa: E402
from aggregator.fetch import fetch_feed, make_client  # noqa: E402
from aggregator.http_net import AsyncioBackend  # noqa: E402
from aggregator.models import FetchRequest, Outcome  # noqa: E402

LAYERS = {"asyncio (http_net)": AsyncioBackend, "anyio (httpx default)": httpcore_auto.AutoBackend}


async def _round(requests: list[FetchRequest], settings: FetchSettings) -> list:
    now = datetime.now(UTC)
    async with make_client(settings) as client:
        limit = asyncio.Semaphore(settings.concurrency)

        async def one(req):
            async with limit:
                return await fetch_feed(client, req, settings, now)

        return await asyncio.gather(*[one(r) for r in requests])


def _with_layer(layer, requests, settings) -> tuple[float, float, list]:
    http_pool.AsyncioBackend = layer  # what ConnectionPool builds when given no backend
    cpu, wall = time.process_time(), time.perf_counter()
    results = asyncio.run(_round(requests, settings))
    return time.process_time() - cpu, time.perf_counter() - wall, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    ensure_tools([])
    settings = FetchSettings(concurrency=args.concurrency, per_host=0)
    with tempfile.TemporaryDirectory(prefix="fetch-layers-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's workers run as an unprivileged user
        www = work / "www"
        names = write_feeds(www, args.feeds, 50)
        with Nginx(www, work) as nginx:
            urls = [f"http://127.0.0.1:{nginx.port}/{name}" for name in names]
            plain = [FetchRequest(feed_id=i, url=u) for i, u in enumerate(urls)]
            _, _, first = _with_layer(AsyncioBackend, plain, settings)
            requests = [
                FetchRequest(
                    feed_id=r.feed_id, url=r.url, etag=r.etag, last_modified=r.last_modified
                )
                for r in first
            ]
            figures: dict[str, dict[str, list[float]]] = {
                n: {"cpu": [], "wall": []} for n in LAYERS
            }
            for _ in range(args.rounds):
                for name, layer in LAYERS.items():
                    cpu, wall, results = _with_layer(layer, requests, settings)
                    bad = [r for r in results if r.outcome is not Outcome.NOT_MODIFIED]
                    if bad:
                        raise SystemExit(f"{name}: {len(bad)} feeds did not answer 304: {bad[0]}")
                    figures[name]["cpu"].append(round(cpu, 4))
                    figures[name]["wall"].append(round(wall, 4))
    med = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}
    ours, theirs = med["asyncio (http_net)"], med["anyio (httpx default)"]
    print(
        f"{args.feeds} conditional GETs (all 304), concurrency {args.concurrency}, {args.rounds} rounds each"
    )
    for name, m in med.items():
        print(f"  {name:24s} median cpu {m['cpu']:.3f} s  wall {m['wall']:.3f} s")
    print(
        f"  anyio / asyncio: cpu x{theirs['cpu'] / ours['cpu']:.2f}, wall x{theirs['wall'] / ours['wall']:.2f}"
    )
    out = HERE / "results" / "fetch-layers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rounds": figures, "medians": med}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
