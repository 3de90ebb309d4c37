from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from aggregator.cli import cli

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if os.environ.get("AGGREGATOR_SHARED_DATA"):
    SHARED_DATA = Path(os.environ["AGGREGATOR_SHARED_DATA"])

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@contextlib.contextmanager
def collections_during(threshold: int = 50):
    """The generations the cyclic garbage collector collects during the block, in a list, at a
    low threshold (a block that leaves the collector on collects many times over). Allocation
    counts start from zero (a collection first, not counted)."""
    runs: list[int] = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    was = gc.get_threshold()
    gc.set_threshold(threshold, 2, 2)
    gc.collect()
    gc.callbacks.append(count)
    try:
        yield runs
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*was)


# The PostgreSQL server the postgres tests use; .ci/run makes them required.
PG_URL = os.environ.get("AGGREGATOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("AGGREGATOR_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_admin():
    """A connection to the test server, or a skip saying why there is none (a failure when
    AGGREGATOR_REQUIRE_POSTGRES=1)."""
    try:
        import psycopg

        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except Exception as e:  # ImportError or any connection error: say which
        why = f"PostgreSQL at {PG_URL} is not usable ({type(e).__name__}: {e})".strip()
        if REQUIRE_PG:
            pytest.fail(f"{why}; AGGREGATOR_REQUIRE_POSTGRES=1 makes these tests required")
        pytest.skip(f"{why}; set AGGREGATOR_TEST_POSTGRES to a server to run them")
    yield conn
    conn.close()


@pytest.fixture
def pg_url(pg_admin):
    """A store URL with a schema of its own, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        pg_admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_target(request, tmp_path) -> str:
    """The store of a test that should behave the same on both backends."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def server():
    """A real, threaded HTTP server on 127.0.0.1 for one test."""
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.clear()
        if srv.is_running():
            srv.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


def rss(title: str, items: list[dict], link: str = "https://outlet.example/") -> str:
    """A small RSS 2.0 document. Each item: title, link, guid, description, date (datetime)."""
    parts = []
    for it in items:
        fields = []
        if "title" in it:
            fields.append(f"<title>{escape(it['title'])}</title>")
        if "link" in it:
            fields.append(f"<link>{escape(it['link'])}</link>")
        if "guid" in it:
            fields.append(f'<guid isPermaLink="false">{escape(it["guid"])}</guid>')
        if "description" in it:
            fields.append(f"<description>{escape(it['description'])}</description>")
        if "date" in it:
            fields.append(f"<pubDate>{format_datetime(it['date'], usegmt=True)}</pubDate>")
        parts.append("<item>" + "".join(fields) + "</item>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>{escape(link)}</link><description>d</description>"
        + "".join(parts)
        + "</channel></rss>"
    )


def simple_items(n: int, prefix: str = "Item", start: datetime = NOW) -> list[dict]:
    return [
        {
            "title": f"{prefix} {i}",
            "link": f"https://outlet.example/{prefix.lower()}-{i}?utm_source=rss",
            "guid": f"{prefix}-{i}",
            "description": f"<p>Body of <b>{prefix}</b> {i}</p>",
            "date": start - timedelta(minutes=i),
        }
        for i in range(n)
    ]


def make_entry(feed_id: int, i: int, published: datetime, **fields):
    """An Entry with key g:<i>, written straight to a store by tests that bypass fetching."""
    from aggregator.models import Entry

    values = {
        "guid": str(i),
        "url": None,
        "link": None,
        "title": f"t{i}",
        "summary": "",
        "summary_html": None,
        "author": None,
        "updated": None,
        "content_hash": str(i),
    }
    values.update(fields)
    return Entry(feed_id=feed_id, key=f"g:{i}", published=published, **values)


def store_entries(store, feed, entries, now: datetime) -> None:
    """One successful fetch of ``feed`` carrying ``entries``, as the pipeline would store it."""
    from aggregator.models import FetchResult, Outcome, ParsedFeed

    store.write_feed_result(
        FetchResult(feed_id=feed.id, outcome=Outcome.OK, url=feed.url),
        ParsedFeed("rss20", None, None, ()),
        entries,
        None,
        now,
    )


class Runner:
    """Drives the real CLI against one temporary store."""

    def __init__(self, db: Path):
        self.db = db
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True, env: dict | None = None):
        res = self.runner.invoke(
            cli, ["--db", str(self.db), *args], env=env, catch_exceptions=False
        )
        if ok and res.exit_code != 0:
            raise AssertionError(f"exit {res.exit_code}\nstdout:{res.stdout}\nstderr:{res.stderr}")
        return res


@pytest.fixture
def run_cli(db_path: Path) -> Runner:
    return Runner(db_path)


# -- `aggregator run` as a real process ------------------------------------------------------

RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_daemon_left_behind():
    """Whatever a test asserts, the daemons it started do not outlive it."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class Daemon:
    """A running `aggregator run` with its JSON log lines collected."""

    def __init__(self, db: Path | str, config: Path, *args: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--db",
                str(db),
                "--config",
                str(config),
                "run",
                "--log-format",
                "json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        RUNNING.append(self.proc)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in list(self.lines):
                if predicate(rec):
                    return rec
            if self.proc.poll() is not None and not any(predicate(r) for r in self.lines):
                break
            time.sleep(0.05)
        raise AssertionError(f"not seen within {timeout}s; log: {''.join(self.raw)[-3000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started
