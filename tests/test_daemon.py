"""`aggregator run` as a real process against a real local server."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from werkzeug import Response

from aggregator.store import SQLiteStore

from .conftest import Daemon, make_entry, rss, simple_items, store_entries

pytestmark = pytest.mark.slow

FAST_CONFIG = """
[fetch]
connect_timeout = 2.0
read_timeout = 10.0
total_timeout = 15.0
[schedule]
default_interval_minutes = 0.02
min_interval_minutes = 0.01
max_interval_minutes = 0.1
jitter = 0.0
backoff_base_minutes = 0.01
[daemon]
tick_seconds = 0.2
stop_timeout_seconds = 5.0
"""


@pytest.fixture
def config(tmp_path) -> Path:
    p = tmp_path / "fast.toml"
    p.write_text(FAST_CONFIG)
    return p


def cli(db: Path, *args: str) -> subprocess.CompletedProcess:
    """`aggregator --db DB ARGS...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def add_feeds(db: Path, *urls: str) -> None:
    from click.testing import CliRunner

    from aggregator.cli import cli

    for url in urls:
        res = CliRunner().invoke(cli, ["--db", str(db), "feeds", "add", "--no-check", url])
        assert res.exit_code == 0, res.output


def hits(server, path: str) -> int:
    return sum(1 for req, _ in server.log if req.path == path)


def test_polls_on_schedule_and_stops_cleanly_mid_round(server, tmp_path, config):
    now = datetime.now(UTC)
    # A has no entries (no publishing history: the default interval, 1.2 s); B publishes
    # rarely (2 entries today), so its interval is pushed up to the maximum (6 s)
    server.expect_request("/a.xml").respond_with_data(rss("A", []))
    server.expect_request("/b.xml").respond_with_data(rss("B", simple_items(2, "B", now)))

    def slow(request):
        time.sleep(8)
        return Response(rss("C", simple_items(1, "C", now)))

    server.expect_request("/slow.xml").respond_with_handler(slow)
    db = tmp_path / "s.sqlite"
    add_feeds(db, server.url_for("/a.xml"), server.url_for("/b.xml"))
    d = Daemon(db, config)
    d.wait_for(lambda r: r.get("event") == "start")
    time.sleep(7)
    a, b = hits(server, "/a.xml"), hits(server, "/b.xml")
    assert a >= 4, (a, b)
    assert 1 <= b <= 2, (a, b)
    # a feed added with the CLI while the daemon runs is picked up by the next tick; it takes
    # 8 s to answer, so a round is in flight when SIGTERM comes, and must not be waited for
    add_feeds(db, server.url_for("/slow.xml"))
    deadline = time.monotonic() + 10
    while hits(server, "/slow.xml") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hits(server, "/slow.xml") == 1
    time.sleep(0.3)
    code, took = d.stop()
    assert code == 0
    assert took < 6, took
    assert any(r.get("event") == "stopped" for r in d.lines)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(
            c.execute(
                "SELECT f.url, count(e.id) FROM feeds f LEFT JOIN entries e ON e.feed_id = f.id GROUP BY f.id"
            )
        )
        assert counts[server.url_for("/a.xml")] == 0 and counts[server.url_for("/b.xml")] == 2
        assert c.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
        sched = dict(c.execute("SELECT url, schedule_reason FROM feeds"))
    assert sched[server.url_for("/a.xml")] == "default interval"
    assert sched[server.url_for("/b.xml")].startswith("publishes ~2.0/day")


def test_second_daemon_is_refused_while_queries_keep_working(server, tmp_path, config):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(2, "A")))
    db = tmp_path / "s.sqlite"
    add_feeds(db, server.url_for("/a.xml"))
    first = Daemon(db, config)
    first.wait_for(lambda r: r.get("event") == "round")
    second = cli(db, "--config", str(config), "run", "--once")
    assert second.returncode == 1
    assert second.stderr.startswith("error: another aggregator daemon (pid ")
    assert str(first.proc.pid) in second.stderr
    q = cli(db, "entries", "--format", "json")
    assert q.returncode == 0 and len(json.loads(q.stdout)) == 2
    assert first.stop()[0] == 0
    # the lock went with the first daemon
    again = cli(db, "--config", str(config), "run", "--once")
    assert again.returncode == 0, again.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_and_healthz_over_http(server, tmp_path, config):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(2, "A")))
    server.expect_request("/bad.xml").respond_with_data("no", status=500)
    db = tmp_path / "s.sqlite"
    add_feeds(db, server.url_for("/a.xml"), server.url_for("/bad.xml"))
    port = free_port()
    d = Daemon(db, config, "--metrics-port", str(port))
    d.wait_for(lambda r: r.get("event") == "round")
    time.sleep(0.5)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "aggregator_rounds_total" in body
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["aggregator_rounds_total"] >= 1
    assert values['aggregator_fetch_outcomes_total{outcome="ok"}'] >= 1
    assert values['aggregator_fetch_outcomes_total{outcome="http_error"}'] >= 1
    assert values["aggregator_entries_created_total"] == 2
    assert values["aggregator_last_round_timestamp_seconds"] > 0
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.text == "ok\n"
    assert d.stop()[0] == 0


def test_sighup_reloads_configuration(server, tmp_path, config):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(1, "A")))
    db = tmp_path / "s.sqlite"
    add_feeds(db, server.url_for("/a.xml"))
    d = Daemon(db, config)
    d.wait_for(lambda r: r.get("event") == "start")
    config.write_text(FAST_CONFIG.replace("tick_seconds = 0.2", "tick_seconds = 0.5"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda r: r.get("event") == "reload")
    config.write_text("[daemon]\ntick_second = 1\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(
        lambda r: (
            "configuration not reloaded" in r.get("message", "") and "tick_second" in r["message"]
        )
    )
    assert d.proc.poll() is None  # a bad file does not stop the daemon
    assert d.stop()[0] == 0


def test_once_logs_json_and_exits(server, tmp_path, config):
    server.expect_request("/a.xml").respond_with_data(rss("A", simple_items(2, "A")))
    db = tmp_path / "s.sqlite"
    add_feeds(db, server.url_for("/a.xml"))
    res = cli(db, "--config", str(config), "run", "--once", "--log-format", "json")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stderr.splitlines()]
    round_rec = next(r for r in records if r.get("event") == "round")
    assert round_rec["ok"] == 1 and round_rec["new_entries"] == 2
    st = cli(db, "status", "--json")
    status = json.loads(st.stdout)
    assert status["feeds"]["total"] == 1 and status["entries"] == 2
    assert status["last_round"]["new_entries"] == 2


def test_retention_keeps_stories_that_are_still_growing(tmp_path):
    now = datetime(2026, 11, 25, tzinfo=UTC)
    store = SQLiteStore(tmp_path / "s.sqlite")
    f = store.add_feed("https://x.example/f", None, now)

    def entry(i, days_ago):
        return make_entry(f.id, i, now - timedelta(days=days_ago))

    store_entries(store, f, [entry(1, 100), entry(2, 100), entry(3, 1)], now)
    ids = {k: i for i, k in store.db.execute("SELECT id, key FROM entries")}
    # story 1: old entry 1 + recent entry 3 (still growing); story 2: old entry 2 only
    store.apply_clustering(
        [(ids["g:1"], 1, 1.0, "new"), (ids["g:3"], 1, 0.5, "similar"), (ids["g:2"], 2, 1.0, "new")],
        [],
        now,
    )
    assert store.remove_older_than(now - timedelta(days=90)) == (1, 1)
    assert {k for (k,) in store.db.execute("SELECT key FROM entries")} == {"g:1", "g:3"}
    assert [s.id for s in store.stories(limit=10)] == [1]
    store.close()


def test_feeds_enable_after_disable(tmp_path, run_cli):
    from aggregator.api import Aggregator

    now = datetime(2026, 11, 25, tzinfo=UTC)
    with Aggregator.open(db=run_cli.db) as agg:
        f = agg.add_feed("http://127.0.0.1:9/x", check=False).feed
        agg.store.set_schedule(f.id, now, "disabled", "failing for 7.0 days (network_error)", now)
    rows = [
        json.loads(x) for x in run_cli("feeds", "list", "--format", "ndjson").stdout.splitlines()
    ]
    assert rows[0]["status"] == "disabled" and "failing for 7.0 days" in rows[0]["last_error"]
    assert "enabled feed 1" in run_cli("feeds", "enable", "1").stdout
    rows = [
        json.loads(x) for x in run_cli("feeds", "list", "--format", "ndjson").stdout.splitlines()
    ]
    assert rows[0]["status"] != "disabled"
    assert "no feed 7" in run_cli("feeds", "enable", "7", ok=False).stderr


def test_queries_while_the_daemon_writes(server, tmp_path, config):
    """CLI queries run while the daemon writes, without 'database is locked'."""
    state = {"n": 0}

    def busy(request):
        state["n"] += 1
        items = [
            {
                "title": f"Story {state['n']} item {j} about things",
                "guid": f"{state['n']}-{j}",
                "link": f"https://busy.example/{state['n']}/{j}",
            }
            for j in range(100)
        ]
        return Response(rss("Busy", items))

    for i in range(3):
        server.expect_request(f"/busy{i}.xml").respond_with_handler(busy)
    db = tmp_path / "s.sqlite"
    add_feeds(db, *(server.url_for(f"/busy{i}.xml") for i in range(3)))
    d = Daemon(db, config)
    d.wait_for(lambda r: r.get("event") == "round")
    failures = []
    queries = [("entries", "--limit", "500"), ("stories",), ("feeds", "list"), ("status",)]
    done, rounds, deadline = 0, 0, time.monotonic() + 90
    # at least 20 queries, and go on until the daemon has written again meanwhile
    while (done < 20 or rounds < 2) and time.monotonic() < deadline:
        args = queries[done % len(queries)]
        res = cli(db, *args)
        done += 1
        if res.returncode != 0 or "locked" in res.stderr:
            failures.append((args, res.returncode, res.stderr[-300:]))
        rounds = sum(1 for r in d.lines if r.get("event") == "round")
    assert d.stop()[0] == 0
    assert not failures, failures
    assert rounds >= 2  # the daemon kept writing meanwhile
