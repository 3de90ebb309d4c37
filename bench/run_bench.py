"""Side-by-side benchmark: aggregator vs lemon24/reader vs newsboat on the same feeds.

    python bench/run_bench.py                    # N = 1000 feeds x 50 entries
    python bench/run_bench.py --feeds 5000
    python bench/run_bench.py --feeds 1000 5000  # several sizes in one run
    python bench/run_bench.py --repeat 3         # each tool's rounds 3 times: medians

What it does, in one invocation:
1. Installs what is missing: nginx and newsboat (Debian packages, apt-get), reader (pip, in
   bench/.peers-venv so the project's own environment is untouched).
2. Generates N feeds (bench/feedgen_bench.py: RSS 2.0 and Atom, 50 entries, ~10-word titles,
   ~100-word HTML descriptions, a share of same-story entries) and serves them from nginx on
   127.0.0.1 (static files: nginx answers If-None-Match / If-Modified-Since with 304).
3. For each tool, on a fresh store: subscribes (not timed), then times three rounds: cold
   (empty store), all-304 (nothing changed), and 10% changed (5 new entries on top of 10% of
   the feeds). Each round is one child process; CPU time and peak RSS come from wait4().
   Same concurrency for every tool (--concurrency, default 16: aggregator's fetch.concurrency,
   with its per-host limit lifted as the peers have none, reader's update_feeds(workers=),
   newsboat's reload-threads).
4. Prints a table (wall, CPU, feeds/s, new entries/s, peak RSS, store size) with the ratios
   against each peer, and writes it as JSON (bench/results/peers-<N>.json).
5. Stops the nginx it started.

aggregator's cold round includes fetch + parse + normalize + clustering + store.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from feedgen_bench import touch_feeds, write_feeds  # noqa: E402

PEERS_VENV = HERE / ".peers-venv"


# -- setup ------------------------------------------------------------------------------------


def ensure_tools(tools: list[str]) -> None:
    missing = [
        pkg
        for pkg, exe in (("nginx-light", "nginx"), ("newsboat", "newsboat"))
        if (exe == "nginx" or "newsboat" in tools) and not shutil.which(exe)
    ]
    if missing:
        print(f"installing {' '.join(missing)} (apt-get)", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if "reader" in tools and not (PEERS_VENV / "bin" / "reader-ok").exists():
        print("installing reader into bench/.peers-venv (pip)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        # reader vendors feedparser, whose HTML handling imports sgmllib (sgmllib3k on PyPI)
        subprocess.run(
            [str(PEERS_VENV / "bin" / "pip"), "install", "-q", "reader", "sgmllib3k"], check=True
        )
        (PEERS_VENV / "bin" / "reader-ok").write_text("")


# what `aggregator update` prints of a round that clustered entries (RoundSummary.line)
PHASES = re.compile(r"\((\d+(?:\.\d+)?)s fetching and storing, (\d+(?:\.\d+)?)s clustering\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root: Path, work: Path):
        self.root, self.work, self.port = root, work, free_port()
        self.conf = work / "nginx.conf"
        self.conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
daemon on;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    types {{ application/rss+xml xml; application/atom+xml atom; text/plain txt; }}
    keepalive_requests 1000000;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{ listen 127.0.0.1:{self.port}; root {root}; etag on; }}
}}
""")
        (work / "tmp").mkdir(exist_ok=True)

    def __enter__(self) -> Nginx:
        subprocess.run(["nginx", "-p", str(self.work), "-c", str(self.conf)], check=True)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start")

    def __exit__(self, *exc) -> None:
        subprocess.run(
            ["nginx", "-p", str(self.work), "-c", str(self.conf), "-s", "quit"], check=False
        )


# -- measuring --------------------------------------------------------------------------------


def measure(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run one child; wall time, CPU time (user + system) and peak RSS from wait4()."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {stderr[-2000:]}")
    return {
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime,
        "peak_mb": ru.ru_maxrss / 1024,
        "stdout": stdout,
    }


def size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- tools --------------------------------------------------------------------------------------


class Aggregator:
    name = "aggregator"

    def __init__(self, work: Path, urls: list[str], concurrency: int):
        self.db = work / "aggregator.sqlite"
        self.config = work / "aggregator.toml"
        # every bench feed is on one host, and the peers have no per-host limit: lift ours
        # (4 by default) so that all three tools have the same fetches in flight
        self.config.write_text(f"[fetch]\nconcurrency = {concurrency}\nper_host = 0\n")
        opml = work / "feeds.opml"
        opml.write_text(
            '<?xml version="1.0"?><opml version="2.0"><head><title>b</title></head><body>'
            + "".join(f'<outline type="rss" text="f" xmlUrl="{u}"/>' for u in urls)
            + "</body></opml>"
        )
        self.base = [
            sys.executable,
            "-m",
            "aggregator",
            "--db",
            str(self.db),
            "--config",
            str(self.config),
        ]
        subprocess.run(
            [*self.base, "feeds", "import", str(opml)], check=True, capture_output=True, cwd=ROOT
        )
        # the bytecode of every module, as a regular install compiles it (pip does; the peers
        # have theirs): without it, where PYTHONDONTWRITEBYTECODE is set (these machines set
        # it), each process of every round compiled ~40 modules again, ~0.13 s of CPU
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "aggregator")], check=True
        )

    def round(self) -> dict:
        return measure([*self.base, "update", "--no-progress"], cwd=ROOT)

    def entries(self) -> int:
        return count_rows(self.db, "entries")

    def store_mb(self) -> float:
        return size_mb(self.db, Path(f"{self.db}-wal"))


class Reader:
    name = "reader"

    def __init__(self, work: Path, urls: list[str], concurrency: int):
        self.db = work / "reader.sqlite"
        self.py = str(PEERS_VENV / "bin" / "python")
        self.script = str(HERE / "reader_round.py")
        self.concurrency = concurrency
        urls_file = work / "reader-urls.txt"
        urls_file.write_text("\n".join(urls))
        subprocess.run([self.py, self.script, str(self.db), "add", str(urls_file)], check=True)

    def round(self) -> dict:
        return measure([self.py, self.script, str(self.db), "update", str(self.concurrency)])

    def entries(self) -> int:
        out = subprocess.run(
            [self.py, self.script, str(self.db), "count"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return int(out.strip())

    def store_mb(self) -> float:
        return size_mb(self.db, Path(f"{self.db}-wal"))


class Newsboat:
    name = "newsboat"

    def __init__(self, work: Path, urls: list[str], concurrency: int):
        self.home = work / "newsboat-home"
        self.home.mkdir()
        self.urls = work / "newsboat-urls"
        self.urls.write_text("\n".join(urls) + "\n")
        self.cache = work / "newsboat-cache.db"
        self.config = work / "newsboat-config"
        self.config.write_text(f"reload-threads {concurrency}\nshow-read-feeds yes\n")
        self.env = {**os.environ, "HOME": str(self.home)}

    def round(self) -> dict:
        return measure(
            [
                "newsboat",
                "-x",
                "reload",
                "-u",
                str(self.urls),
                "-c",
                str(self.cache),
                "-C",
                str(self.config),
            ],
            env=self.env,
        )

    def entries(self) -> int:
        return count_rows(self.cache, "rss_item")

    def store_mb(self) -> float:
        return size_mb(self.cache)


TOOLS = {"aggregator": Aggregator, "reader": Reader, "newsboat": Newsboat}


# -- the run --------------------------------------------------------------------------------------


def run_size(n: int, entries: int, tools: list[str], concurrency: int, work: Path) -> list[dict]:
    rows = []
    www = work / "www"
    with Nginx(www, work) as nginx:
        for tool in tools:
            shutil.rmtree(www, ignore_errors=True)
            names = write_feeds(www, n, entries)
            urls = [f"http://127.0.0.1:{nginx.port}/{name}" for name in names]
            tool_dir = work / tool
            tool_dir.mkdir()
            t = TOOLS[tool](tool_dir, urls, concurrency)
            before = 0
            for round_name in ("cold", "all-304", "10% changed"):
                if round_name == "10% changed":
                    touch_feeds(www, names, 0.10)
                m = t.round()
                stored = t.entries()
                row = {
                    "tool": tool,
                    "feeds": n,
                    "round": round_name,
                    "wall_s": round(m["wall"], 3),
                    "cpu_s": round(m["cpu"], 3),
                    "feeds_per_s": round(n / m["wall"], 1),
                    "new_entries": stored - before,
                    "entries_per_s": round((stored - before) / m["wall"], 1),
                    "peak_mb": round(m["peak_mb"], 1),
                    "store_mb": round(t.store_mb(), 1),
                }
                phases = PHASES.search(m["stdout"]) if tool == "aggregator" else None
                if phases is not None:  # (aggregator's own split of the round's wall time)
                    row["fetch_s"], row["cluster_s"] = map(float, phases.groups())
                if round_name == "cold" and row["new_entries"] < n * entries * 0.9:
                    raise RuntimeError(
                        f"{tool} stored only {row['new_entries']} entries in the cold "
                        f"round (expected {n * entries}); see {work}"
                    )
                before = stored
                rows.append(row)
                print(
                    f"  {tool:10s} {round_name:12s} wall {row['wall_s']:8.2f}s  cpu {row['cpu_s']:8.2f}s  "
                    f"new entries {row['new_entries']:7d}  peak {row['peak_mb']:7.1f} MB",
                    flush=True,
                )
    return rows


def medians(runs: list[dict]) -> list[dict]:
    """One row per size, tool and round: the median of each figure over the repetitions (the
    first repetition's order), with every repetition's wall seconds in ``wall_s_runs``."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["feeds"], r["tool"], r["round"]), []).append(r)
    out = []
    for same in groups.values():
        row = dict(same[0])
        row.pop("rep", None)
        for key, value in same[0].items():
            if isinstance(value, int) and key not in ("feeds", "rep"):
                row[key] = statistics.median_low(r[key] for r in same)
            elif isinstance(value, float):
                row[key] = round(statistics.median(r[key] for r in same), 3)
        row["wall_s_runs"] = [r["wall_s"] for r in same]
        out.append(row)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    ours = {(r["feeds"], r["round"]): r for r in rows if r["tool"] == "aggregator"}
    for r in rows:
        if r["tool"] == "aggregator":
            continue
        a = ours.get((r["feeds"], r["round"]))
        if a:
            out.append(
                {
                    "feeds": r["feeds"],
                    "round": r["round"],
                    "peer": r["tool"],
                    "wall_ratio": round(r["wall_s"] / a["wall_s"], 2),
                    "cpu_ratio": round(r["cpu_s"] / a["cpu_s"], 2) if a["cpu_s"] else None,
                }
            )
    return out


def print_table(rows: list[dict], rat: list[dict]) -> None:
    head = f"{'feeds':>6} {'tool':10} {'round':12} {'wall s':>8} {'cpu s':>8} {'feeds/s':>9} {'entries/s':>10} {'peak MB':>8} {'store MB':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['feeds']:>6} {r['tool']:10} {r['round']:12} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
            f"{r['feeds_per_s']:>9.1f} {r['entries_per_s']:>10.1f} {r['peak_mb']:>8.1f} {r['store_mb']:>9.1f}"
        )
    if any(len(r.get("wall_s_runs", ())) > 1 for r in rows):
        print("\nmedians of the repetitions; each repetition's wall seconds:")
        for r in rows:
            runs = " ".join(f"{w:.2f}" for w in r["wall_s_runs"])
            print(f"  {r['feeds']:>6} {r['tool']:10} {r['round']:12} {runs}")
    split = [r for r in rows if "fetch_s" in r]
    if split:
        print("\naggregator's rounds as it reports them: fetching and storing, then clustering")
        for r in split:
            print(
                f"  {r['feeds']:>6} feeds  {r['round']:12} {r['fetch_s']:6.1f} s + {r['cluster_s']:6.1f} s"
            )
    if rat:
        print("\npeer time / aggregator time (above 1: aggregator is faster)")
        for x in rat:
            print(
                f"  {x['feeds']:>6} feeds  {x['round']:12} vs {x['peer']:9}: wall x{x['wall_ratio']}, cpu x{x['cpu_ratio']}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description="aggregator vs reader vs newsboat")
    ap.add_argument("--feeds", type=int, nargs="+", default=[1000])
    ap.add_argument("--entries", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tools", default="aggregator,reader,newsboat")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every tool's rounds this many times, the tools in turn, and report medians",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    tools = [t for t in args.tools.split(",") if t]
    ensure_tools(tools)
    runs: list[dict] = []
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    # with several sizes and repetitions, the sizes take turns within each repetition: the
    # growth from one size to the next compares runs made minutes apart, not one size's runs
    # against the other's made later (these machines' speed drifts over minutes)
    works = {}
    try:
        for n in args.feeds:
            works[n] = Path(tempfile.mkdtemp(prefix=f"bench-{n}-", dir=args.keep))
            works[n].chmod(0o755)  # nginx's workers run as an unprivileged user
        for rep in range(args.repeat):
            for n, work in works.items():
                print(
                    f"N = {n} feeds x {args.entries} entries, concurrency {args.concurrency}"
                    f" (work: {work})",
                    flush=True,
                )
                if args.repeat > 1:
                    print(f"repetition {rep + 1} of {args.repeat}", flush=True)
                into = work / f"rep-{rep + 1}" if args.repeat > 1 else work
                into.mkdir(exist_ok=True)
                into.chmod(0o755)
                runs += [
                    r | {"rep": rep + 1}
                    for r in run_size(n, args.entries, tools, args.concurrency, into)
                ]
    finally:
        if args.keep is None:
            for work in works.values():
                shutil.rmtree(work, ignore_errors=True)
    rows = medians(runs)
    rat = ratios(rows)
    print_table(rows, rat)
    out = args.out or HERE / "results" / f"peers-{'-'.join(map(str, args.feeds))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "ratios": rat,
                "runs": runs,
                "args": vars(args) | {"out": str(out), "keep": str(args.keep)},
            },
            indent=2,
        )
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
