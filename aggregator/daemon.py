"""`aggregator run`: the daemon. A thin shell over Aggregator.update(due_only=True).

    APScheduler (3.11, BackgroundScheduler)
      every daemon.tick_seconds -> tick: update(due_only=True, stop=stop), record, metrics
      every 24 h (and at start)  -> cleanup: retention (daemon.retention_days)
    main thread: waits for signals
      SIGTERM / SIGINT -> stop taking work, cancel fetches in flight (what is complete is
                          already committed), wait up to daemon.stop_timeout_seconds, exit 0
      SIGHUP           -> reload the configuration file (a bad file is logged and ignored)

One daemon per SQLite store: an exclusive lock on ``<store>.lock`` (flock, released by the
kernel if the process dies). On PostgreSQL any number of daemons share one store: each round
leases its feeds in the database (SKIP LOCKED), and one daemon at a time clusters. CLI
queries take no lock and keep working during rounds (WAL readers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .api import Aggregator
from .config import load_settings
from .errors import AggregatorError, StoreLockedError
from .models import Outcome, RoundSummary

log = logging.getLogger("aggregator")


# -- logging --------------------------------------------------------------------------------------


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _info(message: str, **fields) -> None:
    log.info(message, extra={"fields": fields})


def _warn(message: str, **fields) -> None:
    log.warning(message, extra={"fields": fields})


# -- the lock -------------------------------------------------------------------------------------


class DaemonLock:
    def __init__(self, store_path: Path):
        self.path = Path(f"{store_path}.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLockedError(
                f"another aggregator daemon (pid {holder}) is running on this store; "
                "stop it first, or give this one another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


# -- metrics -----------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics (prometheus-client) and /healthz on 127.0.0.1:port."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.rounds = Counter("aggregator_rounds", "Update rounds run by the daemon", registry=r)
        self.outcomes = Counter(
            "aggregator_fetch_outcomes", "Fetch outcomes by kind", ["outcome"], registry=r
        )
        self.duration = Histogram(
            "aggregator_round_duration_seconds",
            "Duration of a round",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.entries = Counter("aggregator_entries_created", "New entries stored", registry=r)
        self.stories = Counter("aggregator_stories_touched", "Stories created or grown", registry=r)
        self.queue = Gauge(
            "aggregator_queue_depth", "Feeds due at the start of the last round", registry=r
        )
        self.disabled = Gauge("aggregator_feeds_disabled", "Feeds disabled or gone", registry=r)
        self.last_round = Gauge(
            "aggregator_last_round_timestamp_seconds", "When the last round finished", registry=r
        )
        for o in Outcome:
            self.outcomes.labels(o.value)
        self.healthy = True
        self._server: WSGIServer | None = None

    def observe(self, s: RoundSummary, due: int, disabled: int) -> None:
        self.rounds.inc()
        for res in s.results:
            self.outcomes.labels(res.outcome.value).inc()
        self.duration.observe((s.finished_at - s.started_at).total_seconds())
        self.entries.inc(s.new_entries)
        self.stories.inc(s.stories_touched)
        self.queue.set(due)
        self.disabled.set(disabled)
        self.last_round.set(s.finished_at.timestamp())

    def serve(self, port: int) -> int:
        from prometheus_client import make_wsgi_app

        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/healthz":
                ok = self.healthy
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [b"ok\n" if ok else b"stopping\n"]
            return metrics_app(environ, start_response)

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:
                pass

        self._server = make_server("127.0.0.1", port, app, handler_class=Quiet)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- the daemon --------------------------------------------------------------------------------


class Daemon:
    def __init__(self, agg: Aggregator, config_path: Path | None, metrics_port: int | None):
        self.agg = agg
        self.config_path = config_path
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.work = threading.Lock()  # one store user at a time: tick or cleanup
        self.metrics = Metrics()
        self.metrics_port = (
            agg.settings.daemon.metrics_port if metrics_port is None else metrics_port
        )

    def tick(self) -> None:
        if self.stop.is_set():
            return
        with self.work:
            try:
                if self.agg.store.ensure_connected():
                    _warn("reconnected to the store", event="reconnect")
                counts = self.agg.store.feed_counts(self.agg.clock())
                summary = self.agg.update(due_only=True, stop=self.stop)
                self.agg.record_round(summary)
                counts_after = self.agg.store.feed_counts(self.agg.clock())
                self.metrics.observe(summary, counts["due"], counts_after["disabled"])
                if summary.results or summary.clustered:
                    _info(
                        summary.line(),
                        event="round",
                        feeds=len(summary.results),
                        ok=summary.ok,
                        not_modified=summary.not_modified,
                        failed=summary.failed,
                        new_entries=summary.new_entries,
                        clustered=summary.clustered,
                        fetched=[r.url for r in summary.results],
                        stopped=self.stop.is_set(),
                    )
                for r in summary.results:
                    if r.outcome.failed:
                        log.warning(
                            f"{r.url}: {r.outcome.value}: {r.error}",
                            extra={
                                "fields": {
                                    "event": "feed_failed",
                                    "url": r.url,
                                    "outcome": r.outcome.value,
                                }
                            },
                        )
            except AggregatorError as e:
                log.error(f"round failed: {e}")
            except Exception:
                log.exception("round failed")

    def cleanup(self) -> None:
        if self.stop.is_set():
            return
        with self.work:
            try:
                entries, stories = self.agg.cleanup()
                if entries or stories:
                    _info(
                        f"retention: removed {entries} entries and {stories} stories",
                        event="cleanup",
                        entries=entries,
                        stories=stories,
                    )
            except Exception:
                log.exception("cleanup failed")

    def _reload(self) -> None:
        try:
            settings = load_settings(self.config_path)
        except AggregatorError as e:
            log.error(f"configuration not reloaded: {e}")
            return
        with self.work:
            self.agg.settings = settings
        _info("configuration reloaded", event="reload")

    def run(self, once: bool = False) -> int:
        if self.metrics_port:
            port = self.metrics.serve(self.metrics_port)
            _info(f"metrics on http://127.0.0.1:{port}/metrics", event="metrics", port=port)
        if once:
            self.tick()
            self.metrics.close()
            return 0
        from apscheduler.schedulers.background import BackgroundScheduler

        d = self.agg.settings.daemon
        scheduler = BackgroundScheduler(timezone=UTC)
        now = datetime.now(UTC)
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=d.tick_seconds,
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            id="tick",
        )
        scheduler.add_job(
            self.cleanup,
            "interval",
            hours=24,
            next_run_time=now + timedelta(seconds=5),
            max_instances=1,
            coalesce=True,
            id="cleanup",
        )
        scheduler.start()
        _info(
            f"daemon started (pid {os.getpid()}, tick {d.tick_seconds:g}s)",
            event="start",
            pid=os.getpid(),
        )
        try:
            while not self.stop.wait(0.2):
                if self.reload.is_set():
                    self.reload.clear()
                    tick = self.agg.settings.daemon.tick_seconds
                    self._reload()
                    new_tick = self.agg.settings.daemon.tick_seconds
                    if new_tick != tick:
                        scheduler.reschedule_job("tick", trigger="interval", seconds=new_tick)
        finally:
            self.metrics.healthy = False
            _info("stopping: no new work; cancelling fetches in flight", event="stopping")
            scheduler.shutdown(wait=False)
            started = time.monotonic()
            done = self.work.acquire(timeout=self.agg.settings.daemon.stop_timeout_seconds)
            if done:
                self.work.release()
            _info(
                f"stopped in {time.monotonic() - started:.1f}s"
                + ("" if done else " (gave up waiting for the round in progress)"),
                event="stopped",
            )
            self.metrics.close()
        return 0


def run_daemon(
    db: str | None,
    config_path: Path | None,
    *,
    once: bool = False,
    log_format: str = "text",
    metrics_port: int | None = None,
    tick_seconds: float | None = None,
) -> int:
    setup_logging(log_format)
    settings = load_settings(config_path)
    if tick_seconds is not None:
        from msgspec.structs import replace

        settings = replace(settings, daemon=replace(settings.daemon, tick_seconds=tick_seconds))
        settings.validate()
    agg = Aggregator.open(db=db, settings=settings)
    # One daemon per SQLite file; on a shared store (PostgreSQL) any number, coordinated by
    # feed leases and the clustering lock in the database.
    lock = None if agg.store.shared else DaemonLock(Path(agg.store.path))
    try:
        if lock is not None:
            lock.acquire()
        daemon = Daemon(agg, config_path, metrics_port)
        signal.signal(signal.SIGTERM, lambda *_: daemon.stop.set())
        signal.signal(signal.SIGINT, lambda *_: daemon.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: daemon.reload.set())
        return daemon.run(once=once)
    finally:
        if lock is not None:
            lock.release()
        agg.close()
