"""Scale-out on PostgreSQL: the same round run by 1, 2 and 3 workers sharing one store.

    python bench/scaleout.py                          # 1000 feeds x 50 entries, 1..3 workers
    python bench/scaleout.py --feeds 2000 --workers 1 2 3 4
    python bench/scaleout.py --db postgresql://user@host/db

For each worker count, on a fresh PostgreSQL schema: the feeds (bench/feedgen_bench.py, served
by nginx on 127.0.0.1) are subscribed, then K `aggregator update` processes start at the same
moment and share the round through feed leases; the round ends when the last one exits. The
clustering of entries the leader had not seen yet (written by other workers after its own
clustering pass) is timed apart ("catch-up": what the leading daemon's next tick would do).
Then an all-304 round the same way. Reported: wall seconds, feeds/s, the workers' summed CPU,
and the speed-up against one worker. A SQLite run of one process is included for reference.
Checks: every feed fetched OK once, exact entry count, no entry without a story.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from feedgen_bench import write_feeds  # noqa: E402
from run_bench import Nginx, ensure_tools  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"


def cli(db: str, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "aggregator", "--db", db, "--config", str(config), *args]


def parallel(cmds: list[list[str]]) -> dict:
    """Start every command at once; wall until the last exits, summed CPU, max peak RSS."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in cmds
    ]
    cpu = peak = 0.0
    pending = {p.pid: p for p in procs}
    while pending:
        pid, status, ru = os.wait4(-1, 0)
        p = pending.pop(pid, None)
        if p is None:
            continue
        cpu += ru.ru_utime + ru.ru_stime
        peak = max(peak, ru.ru_maxrss / 1024)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"worker failed: {p.stderr.read().decode()[-2000:]}")
    return {"wall": time.perf_counter() - t0, "cpu": cpu, "peak_mb": peak}


def run(n: int, entries: int, workers: list[int], db: str, concurrency: int, work: Path):
    import psycopg

    www = work / "www"
    names = write_feeds(www, n, entries)
    rows = []
    with Nginx(www, work) as nginx:
        urls = [f"http://127.0.0.1:{nginx.port}/{name}" for name in names]
        opml = work / "feeds.opml"
        opml.write_text(
            '<?xml version="1.0"?><opml version="2.0"><head><title>b</title></head><body>'
            + "".join(f'<outline type="rss" text="f" xmlUrl="{u}"/>' for u in urls)
            + "</body></opml>"
        )
        config = work / "aggregator.toml"
        config.write_text(f"[fetch]\nconcurrency = {concurrency}\n")
        admin = psycopg.connect(db, autocommit=True)
        targets = [("sqlite", 1)] + [("postgres", k) for k in workers]
        for backend, k in targets:
            if backend == "sqlite":
                target = str(work / f"ref-{uuid.uuid4().hex[:6]}.sqlite")
            else:
                schema = f"bench_{uuid.uuid4().hex[:10]}"
                admin.execute(f"CREATE SCHEMA {schema}")
                sep = "&" if "?" in db else "?"
                target = f"{db}{sep}options=-csearch_path%3D{schema}"
            subprocess.run(
                cli(target, config, "feeds", "import", str(opml)),
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            for round_name in ("cold", "all-304"):
                m = parallel([cli(target, config, "update", "--no-progress")] * k)
                t0 = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import sys; from aggregator.api import Aggregator;"
                        " a = Aggregator.open(db=sys.argv[1]); a.cluster(); a.close()",
                        target,
                    ],
                    check=True,
                    cwd=ROOT,
                )
                catch_up = time.perf_counter() - t0
                row = {
                    "backend": backend,
                    "workers": k,
                    "feeds": n,
                    "round": round_name,
                    "wall_s": round(m["wall"], 2),
                    "catch_up_s": round(catch_up, 2),
                    "feeds_per_s": round(n / m["wall"], 1),
                    "cpu_s": round(m["cpu"], 2),
                    "peak_mb": round(m["peak_mb"], 1),
                }
                rows.append(row)
                print(
                    f"  {backend:8s} workers {k}  {round_name:8s} wall {row['wall_s']:7.2f}s"
                    f"  feeds/s {row['feeds_per_s']:7.1f}  cpu {row['cpu_s']:7.2f}s"
                    f"  catch-up clustering {row['catch_up_s']:5.2f}s",
                    flush=True,
                )
            check = (
                "SELECT (SELECT count(*) FROM feeds WHERE last_status = 'not_modified'),"
                " (SELECT count(*) FROM entries),"
                " (SELECT count(*) FROM entries WHERE story_id IS NULL)"
            )
            if backend == "postgres":
                with psycopg.connect(target) as c:
                    got = c.execute(check).fetchone()
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
            else:
                import sqlite3

                with sqlite3.connect(target) as c:
                    got = c.execute(check).fetchone()
            if tuple(got) != (n, n * entries, 0):
                raise RuntimeError(f"{backend} x{k}: (304 feeds, entries, unclustered) = {got}")
        admin.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="aggregator scale-out on PostgreSQL")
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--db", default=os.environ.get("AGGREGATOR_TEST_POSTGRES", DEFAULT_DB))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scaleout.json")
    args = ap.parse_args()
    ensure_tools([])
    import tempfile

    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers (www-data) read the feeds from here
        rows = run(args.feeds, args.entries, args.workers, args.db, args.concurrency, Path(tmp))
    base = {
        r["round"]: r["wall_s"] for r in rows if r["backend"] == "postgres" and r["workers"] == 1
    }
    print(
        f"\n{'backend':8s} {'workers':>7s} {'round':8s} {'wall s':>8s} {'feeds/s':>8s}"
        f" {'cpu s':>7s} {'catch-up s':>10s} {'speed-up':>8s}"
    )
    for r in rows:
        speedup = base[r["round"]] / r["wall_s"] if r["backend"] == "postgres" else float("nan")
        r["speedup_vs_1"] = round(speedup, 2)
        print(
            f"{r['backend']:8s} {r['workers']:7d} {r['round']:8s} {r['wall_s']:8.2f}"
            f" {r['feeds_per_s']:8.1f} {r['cpu_s']:7.2f} {r['catch_up_s']:10.2f} {speedup:8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
