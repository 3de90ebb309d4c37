"""Rounds whose parsing and writing run in another process (``fetch.parse_processes``), against
a real local server, on both stores: the same result as in-process, and a parsing process that
dies costs no feed."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from werkzeug import Response

from aggregator import pipeline
from aggregator.api import Aggregator
from aggregator.config import FetchSettings, Settings
from aggregator.models import Outcome

from .conftest import rss, simple_items
from .test_pipeline import Clock

SETTINGS = Settings(
    fetch=FetchSettings(
        connect_timeout=2, read_timeout=2, total_timeout=5, concurrency=8, parse_processes=1
    )
)
NOW_ITEMS = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
IN_PROCESS = msgspec.structs.replace(
    SETTINGS, fetch=msgspec.structs.replace(SETTINGS.fetch, parse_processes=0)
)


def serve_feeds(server, n: int, delay: float = 0.0, items: int = 3) -> list[str]:
    def handler(i):
        body = rss(f"Outlet {i}", simple_items(items, f"Outlet {i} story"))

        def respond(request):
            time.sleep(delay)
            return Response(body, content_type="application/rss+xml", headers={"ETag": f'"{i}"'})

        return respond

    for i in range(n):
        server.expect_request(f"/f{i}").respond_with_handler(handler(i))
    server.expect_request("/junk").respond_with_data(b"\x00\xff not a feed")
    return [server.url_for(f"/f{i}") for i in range(n)] + [server.url_for("/junk")]


class Spy:
    """Records the round's Offload and its workers' pids while the round runs."""

    def __init__(self, monkeypatch):
        self.offloads, self.pids = [], set()
        real = pipeline.Offload.for_round.__func__

        def for_round(cls, store, settings, feeds):
            off = real(cls, store, settings, feeds)
            if off is not None:
                self.offloads.append(off)
            return off

        self.indexed = []
        real_indexed = pipeline.Offload.indexed

        def indexed(off, future):
            self.indexed.append(real_indexed(off, future))
            return self.indexed[-1]

        monkeypatch.setattr(pipeline, "OFFLOAD_MIN_FEEDS", 1)
        monkeypatch.setattr(pipeline.Offload, "for_round", classmethod(for_round))
        monkeypatch.setattr(pipeline.Offload, "indexed", indexed)

    def on_result(self, result) -> None:
        for off in self.offloads:
            self.pids.update(off.pids())


class Gate:
    """Holds the round's parsing until ``after`` feeds are fetched: the worker's tasks (their
    futures) wait for it, so that the worker is behind by construction, not because this
    machine happened to parse slower than it fetched; this process's batches (``prepare_many``,
    on its parser thread) wait too, and then until the worker has had its third task, so that
    the feeds gathered meanwhile go to the worker. (The round holds at most 2 x concurrency
    fetched bodies: ``after`` must be within it.) Records the size of each task sent to the
    worker and of each batch parsed here."""

    def __init__(self, monkeypatch, after: int):
        from aggregator import fetch as fetch_module

        self.open, self.third = threading.Event(), threading.Event()
        self.to_worker, self.here = [], []
        self.stuck = []  # waits that ran out: the round never got to what opens them
        fetched = itertools.count(1)
        real_fetch = fetch_module.fetch_feed
        real_process, real_prepare_many = pipeline.Offload.process, pipeline.prepare_many

        async def fetch_feed(*args, **kwargs):
            result = await real_fetch(*args, **kwargs)
            if next(fetched) >= after:
                self.open.set()
            return result

        def process(off, results):
            self.to_worker.append(len(results))
            if len(self.to_worker) >= 3:
                self.third.set()
            sent = real_process(off, results)
            if sent is None:
                return None
            held = Future()

            def relay():
                self.wait(self.open)
                try:
                    held.set_result(sent.result())
                except BaseException as exc:  # (a dead worker's BrokenProcessPool too)
                    held.set_exception(exc)

            threading.Thread(target=relay, daemon=True).start()
            return held

        def prepare_many(results):
            self.here.append(len(results))
            self.wait(self.open)
            self.wait(self.third)
            return real_prepare_many(results)

        monkeypatch.setattr(fetch_module, "fetch_feed", fetch_feed)
        monkeypatch.setattr(pipeline.Offload, "process", process)
        monkeypatch.setattr(pipeline, "prepare_many", prepare_many)

    def wait(self, event: threading.Event) -> None:
        if not event.wait(30):
            self.stuck.append(event)


def stored(agg: Aggregator) -> tuple:
    feeds = sorted(
        (f.url, f.title, f.last_status, f.last_error, f.etag, f.body_hash, f.next_check_at)
        for f in agg.feeds()
    )
    entries = sorted(
        (e.feed_title, e.key, e.title, e.summary, e.url, e.published, e.first_seen)
        for e in agg.entries(limit=100_000)
    )
    return feeds, entries


def subscribe_and_update(db: str, settings: Settings, urls: list[str], on_result=None):
    """One round over ``urls``, subscribed in a fresh store: its summary and what it stored."""
    with Aggregator.open(db=db, settings=settings, clock=Clock()) as agg:
        for url in urls:
            agg.add_feed(url, check=False)
        return agg.update(on_result=on_result), stored(agg)


def test_offloaded_round_stores_what_an_in_process_round_stores(
    server, db_target, tmp_path, monkeypatch
):
    urls = serve_feeds(server, 30)
    spy = Spy(monkeypatch)
    summary, offloaded = subscribe_and_update(db_target, SETTINGS, urls, spy.on_result)
    assert len(spy.offloads) == 1
    assert spy.pids and os.getpid() not in spy.pids  # the parsing did happen elsewhere
    assert summary.ok == 30 and summary.new_entries == 90 and summary.failed == 1
    assert summary.clustered == 90
    assert spy.indexed == [True]  # by the worker, not redone here
    if "://" not in db_target:  # SQLite: the worker indexed the round while this process
        # clustered (PostgreSQL indexes as rows are written)
        with sqlite3.connect(db_target) as db:
            assert db.execute("SELECT count(*) FROM entries_fts_docsize").fetchone()[0] == 90

    reference, in_process = subscribe_and_update(
        str(tmp_path / "in-process.sqlite"), IN_PROCESS, urls
    )
    assert in_process == offloaded

    def rows(s):
        return sorted((r.url, r.outcome, r.new_entries, r.error) for r in s.results)

    assert rows(summary) == rows(reference)


def test_this_process_parses_too_while_the_worker_is_behind(
    server, db_target, tmp_path, monkeypatch
):
    """Fetching is quicker than parsing: while the worker has a task at work and one waiting,
    the round's process parses and writes feeds itself (both cores work), and the store ends
    up just as a round that parsed everything in one place leaves it."""
    urls = serve_feeds(server, 40, items=150)[:-1]
    spy = Spy(monkeypatch)
    gate = Gate(monkeypatch, after=14)  # the worker is behind until 14 feeds are fetched
    summary, shared = subscribe_and_update(db_target, SETTINGS, urls, spy.on_result)
    (off,) = spy.offloads
    assert summary.ok == 40 and summary.new_entries == 40 * 150 and summary.failed == 0
    assert 0 < off.sent < 40, off.sent  # some feeds went to the worker, some were done here
    assert not gate.stuck and gate.here and sum(gate.here) == 40 - off.sent
    assert spy.pids and os.getpid() not in spy.pids

    _, in_process = subscribe_and_update(str(tmp_path / "in-process.sqlite"), IN_PROCESS, urls)
    assert in_process == shared


def test_a_worker_that_is_behind_gets_several_feeds_in_one_task(
    server, db_target, tmp_path, monkeypatch
):
    """Feeds fetched while the worker has a task at work and one waiting gather, and go to it
    in one task of at most PARSE_BATCH, written in one transaction (SQLite); this process
    takes batches of at least PARSE_MIN_HERE itself meanwhile. The store ends up as a round
    that parsed each feed alone leaves it."""
    urls = serve_feeds(server, 40, items=150)[:-1]
    spy = Spy(monkeypatch)
    gate = Gate(monkeypatch, after=14)  # the worker is behind until 14 feeds are fetched
    to_worker, here = gate.to_worker, gate.here
    summary, batched = subscribe_and_update(db_target, SETTINGS, urls, spy.on_result)
    (off,) = spy.offloads
    assert summary.ok == 40 and summary.new_entries == 40 * 150 and summary.failed == 0
    # the first two feeds each went to the worker at once (it was not behind yet), the next
    # four were parsed here, and the ones fetched meanwhile went to the worker together
    assert not gate.stuck
    assert to_worker[:2] == [1, 1] and here[0] == pipeline.PARSE_MIN_HERE, (to_worker, here)
    assert sum(to_worker) == off.sent and sum(to_worker) + sum(here) == 40
    assert max(to_worker) > 1 and max(to_worker + here) <= pipeline.PARSE_BATCH, to_worker
    assert all(n >= pipeline.PARSE_MIN_HERE for n in here), here

    _, in_process = subscribe_and_update(str(tmp_path / "in-process.sqlite"), IN_PROCESS, urls)
    assert in_process == batched


def test_a_batch_is_parsed_before_its_transaction_begins(tmp_path, monkeypatch):
    """write_many parses every feed of a batch first: the store's write lock is not held
    while it parses. Each feed is then written as when written alone."""
    from aggregator.models import FetchResult
    from aggregator.store import open_store

    store = open_store(str(tmp_path / "s.sqlite"))
    now = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    feeds = [store.add_feed(f"http://example.com/{i}", None, now) for i in range(3)]
    body = rss("Outlet", simple_items(2, "Outlet story")).encode()
    results = [
        (FetchResult(feed_id=f.id, outcome=Outcome.OK, url=f.url, status_code=200, body=body), now)
        for f in feeds
    ]
    locked = []
    real = pipeline.prepare_result

    def prepare(fetch, when):
        locked.append(store.db.in_transaction)
        return real(fetch, when)

    monkeypatch.setattr(pipeline, "prepare_result", prepare)
    try:
        written = pipeline.write_many(store, results, SETTINGS)
    finally:
        store.close()
    assert locked == [False, False, False]
    assert [w.new_entries for w in written] == [2, 2, 2]


def test_a_parsing_process_that_dies_costs_no_feed(server, db_target, monkeypatch, caplog):
    urls = serve_feeds(server, 40, delay=0.05)  # results keep coming after the kill
    spy = Spy(monkeypatch)
    killed = []

    def kill_workers(result) -> None:
        spy.on_result(result)
        if not killed and spy.pids:
            for pid in spy.pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(spy.pids)

    caplog.set_level(logging.WARNING, logger="aggregator")
    with Aggregator.open(db=db_target, settings=SETTINGS, clock=Clock()) as agg:
        for url in urls:
            agg.add_feed(url, check=False)
        summary = agg.update(on_result=kill_workers)
        assert killed
        assert "a parsing process died" in caplog.text  # the fallback did run
        assert summary.ok == 40 and summary.failed == 1
        assert len(agg.entries(limit=1000)) == 120
        assert {f.last_status for f in agg.feeds() if "junk" not in f.url} == {Outcome.OK.value}
        # and the next round sees every feed as fetched (validators kept): nothing is lost
        again = agg.update()
        assert again.new_entries == 0 and again.ok + again.not_modified == 40


def test_results_with_nothing_to_parse_go_to_the_worker_in_batches(
    server, db_target, monkeypatch, caplog
):
    """A 304 or an error is a small write: the worker takes them SMALL_BATCH at a time, one
    task each (written here, they held the GIL against the fetching loop; one task per feed,
    the trips between processes cost more). A worker that dies meanwhile costs no result."""
    urls = serve_feeds(server, 30)[:-1]  # (not the junk one: its body is parsed every time)
    spy = Spy(monkeypatch)
    monkeypatch.setattr(pipeline, "SMALL_BATCH", 4)
    batches = []
    kill_at = []  # the batch before which the worker is killed
    real = pipeline.Offload.write_many

    def write_many(off, results):
        batches.append(len(results))
        if len(batches) in kill_at:
            for pid in off.pids():
                os.kill(pid, signal.SIGKILL)
        return real(off, results)

    monkeypatch.setattr(pipeline.Offload, "write_many", write_many)
    clock = Clock()
    with Aggregator.open(db=db_target, settings=SETTINGS, clock=clock) as agg:
        for url in urls:
            agg.add_feed(url, check=False)
        first = agg.update(on_result=spy.on_result)
        assert first.ok == 30 and spy.pids and batches == []
        before = {f.url: f.last_fetched_at for f in agg.feeds()}
        clock.now += timedelta(minutes=5)
        again = agg.update(on_result=spy.on_result)
        assert again.not_modified == 30 and again.failed == 0 and len(again.results) == 30
        assert batches == [4] * 7 + [2]  # the last one when the fetching ends
        after = agg.feeds()
        assert {f.last_status for f in after} == {Outcome.NOT_MODIFIED.value}
        assert all(f.last_fetched_at > before[f.url] for f in after)  # each one written

        # the worker dies before the second batch: that one and the rest are written here
        caplog.set_level(logging.WARNING, logger="aggregator")
        batches.clear()
        kill_at.append(2)
        clock.now += timedelta(minutes=5)
        third = agg.update()
        assert len(batches) >= 2 and "a parsing process died" in caplog.text
        assert third.not_modified == 30 and third.failed == 0 and len(third.results) == 30
        second = {f.url: f.last_fetched_at for f in after}
        assert all(f.last_fetched_at > second[f.url] for f in agg.feeds())


def test_a_worker_does_not_import_the_http_client(db_target):
    """The workers parse and write; httpx's import (~0.25 s of CPU here) is the fetching
    process's alone."""
    off = pipeline.Offload(db_target, SETTINGS, 1)
    try:
        loaded = off.pool.submit(eval, "sorted(__import__('sys').modules)").result(timeout=60)
    finally:
        off.close()
    assert "aggregator.pipeline" in loaded  # (what the worker runs)
    assert "httpx" not in loaded and "aggregator.fetch" not in loaded


PARENT = """
import sys
from aggregator.config import FetchSettings, Settings
from aggregator.pipeline import Offload
settings = Settings(fetch=FetchSettings(parse_processes=1))
off = Offload(sys.argv[1], settings, 1)
off.pool.submit(int).result()  # the worker is up
print(*off.pids(), flush=True)
sys.stdin.read()  # until killed
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_ends_when_its_round_process_is_killed(tmp_path):
    """SIGKILL gives the round's process no chance to stop its pool; the worker must notice
    on its own, or it stays forever with its store connection open."""
    import subprocess
    import sys

    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc to see whether a process is alive")
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "store.sqlite")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = None
    try:
        (worker,) = map(int, proc.stdout.readline().split())
        assert _alive(worker)
        proc.kill()
        proc.wait(timeout=10)
        end = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its round's process"
    finally:
        proc.kill()
        proc.wait()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)  # not left behind when the test fails


def test_a_one_shot_round_clusters_in_the_process_that_read_the_snapshot(
    server, tmp_path, monkeypatch, caplog
):
    """With ``keep_clusterer=False`` (the CLI's `update`), a clustering process reads the
    clusterer snapshot while the round fetches, then places the round's entries and writes the
    snapshot: the same stories as a round that clusters in its own process."""
    from .test_clustering_stage import headline

    events, outlets = 12, 5
    bodies: dict[int, str] = {}

    def publish(upto: int) -> None:  # each outlet tells events [0, upto)
        for o in range(outlets):
            items = [
                {
                    "title": headline(e, o),
                    "link": f"https://outlet{o}.example/{e}",
                    "guid": f"{o}-{e}",
                    "date": NOW_ITEMS + timedelta(minutes=40 * e + 3 * o),
                }
                for e in range(upto)
            ]
            bodies[o] = rss(f"Outlet {o}", items)

    for o in range(outlets):
        server.expect_request(f"/o{o}").respond_with_handler(
            lambda request, o=o: Response(bodies[o], content_type="application/rss+xml")
        )
    urls = [server.url_for(f"/o{o}") for o in range(outlets)]
    spy = Spy(monkeypatch)

    def rounds(db: str, keep: bool, on_result=None) -> tuple:
        publish(8)
        with Aggregator.open(db=db, settings=SETTINGS, clock=Clock()) as agg:
            for url in urls:
                agg.add_feed(url, check=False)
            assert agg.update().new_entries == 8 * outlets  # leaves a snapshot at close
        publish(events)  # 4 more events, told by every outlet
        with Aggregator.open(db=db, settings=SETTINGS, clock=Clock()) as agg:
            summary = agg.update(keep_clusterer=keep, on_result=on_result)
            left_here = agg.clustering.clusterer
            groups: dict[int, set[str]] = {}
            for e in agg.entries(limit=1000):
                groups.setdefault(e.story_id, set()).add(e.url)
        return summary, spy.offloads[-1], left_here, {frozenset(g) for g in groups.values()}

    there, off, left, stories_there = rounds(str(tmp_path / "there.sqlite"), keep=False)
    assert there.new_entries == 4 * outlets and there.clustered == 4 * outlets
    assert off.preloading and left is None  # clustered there, nothing kept here
    here, off, left, stories_here = rounds(str(tmp_path / "here.sqlite"), keep=True)
    assert here.clustered == 4 * outlets
    assert not off.preloading and left is not None
    assert stories_there == stories_here
    assert len(stories_there) == events  # (the headlines are made to be told apart)
    # that process wrote the snapshot of the store as it is now: the next one reads it
    from aggregator.clustering import ClusteringStage
    from aggregator.store import open_store

    store = open_store(str(tmp_path / "there.sqlite"))
    try:
        assert ClusteringStage(SETTINGS.cluster).preload(store)
    finally:
        store.close()
    # the worker and the clustering process die: this process clusters, same stories
    killed = []

    def kill_worker(result) -> None:
        spy.on_result(result)
        if not killed and len(spy.pids) == 2:
            for pid in spy.pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(spy.pids)

    caplog.set_level(logging.WARNING, logger="aggregator")
    died, off, left, stories_died = rounds(str(tmp_path / "died.sqlite"), False, kill_worker)
    assert len(killed) == 2 and off.preloading and "a parsing process died" in caplog.text
    assert "the clustering process died" in caplog.text
    assert died.new_entries == 4 * outlets and died.clustered == 4 * outlets
    assert left is not None  # (clustered here)
    assert stories_died == stories_here


def test_a_round_worker_opens_the_store_in_bulk(tmp_path, monkeypatch):
    import signal

    from aggregator.store.sqlite import BULK_CACHE_KIB

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # (this process keeps its own)
    for name in ("_worker_store", "_worker_settings", "_worker_asked", "_worker_meter"):
        monkeypatch.setattr(pipeline, name, None)
    pipeline._worker_init(str(tmp_path / "s.sqlite"), SETTINGS)
    store = pipeline._worker_store
    assert store.db.execute("PRAGMA cache_size").fetchone()[0] == -BULK_CACHE_KIB
    store.close()


def test_the_index_gives_way_to_a_task_sent_behind_it(tmp_path, monkeypatch):
    """In a round's worker the full-text index stops for any task that waits behind it (the
    round's process counts what it sends, the worker what it starts) and its rest goes on in
    the task after that one: the clustering stage's batches and writes do not wait for it."""
    from aggregator.store import open_store

    from .test_search import fts_consistent, harbour_store

    now = datetime.now(UTC).replace(microsecond=0)
    store, _ = harbour_store(tmp_path / "s.sqlite", 1200, now)
    store.close()
    # in this process, as the worker runs the tasks: the index, with one task asked behind it
    worker_store = open_store(tmp_path / "s.sqlite")
    asked = type("Shared", (), {"value": 0})()
    monkeypatch.setattr(pipeline, "_worker_store", worker_store)
    monkeypatch.setattr(pipeline, "_worker_asked", asked)
    monkeypatch.setattr(pipeline, "_worker_started", 0)
    monkeypatch.setattr(pipeline, "_worker_indexed", False)
    asked.value = 1
    assert pipeline._worker_index() is False  # stopped after its first chunk
    assert fts_consistent(worker_store) == 500
    pipeline._worker_task()  # that task starts
    assert pipeline._worker_index() is True and fts_consistent(worker_store) == 1200
    assert pipeline._worker_index() is True  # (a later part has nothing left to do)
    worker_store.close()


@contextmanager
def _indexing_round(tmp_path, entries: int):
    """(a store of ``entries`` entries not in the full-text index yet, a round's Offload on
    it with its one worker up, as if it had parsed them); the Offload is closed after the
    block, the store is left open."""
    from .test_search import harbour_store

    path = tmp_path / "s.sqlite"
    store, _ = harbour_store(path, entries, datetime.now(UTC).replace(microsecond=0))
    off = pipeline.Offload(str(path), SETTINGS, 1)
    try:
        off.pool.submit(int).result(timeout=60)  # the worker is up
        off.sent = 1  # (as if it had parsed the round's feeds)
        yield store, off
    finally:
        off.close()


def test_a_round_worker_sends_the_rest_of_the_index_after_each_other_task(tmp_path):
    from .test_search import fts_consistent

    with _indexing_round(tmp_path, 3000) as (store, off):
        off.pool.submit(time.sleep, 0.5)  # the worker is busy, so that what follows queues up
        first = off.index_pending()
        assert off.indexing is first and not off.busy()  # the index alone gives way
        batch = off.prefetch([1, 2, 3], 40, 0.5)
        assert batch is not None  # not refused for the index
        rest = off.indexing
        assert rest is not first  # what is left of the index comes after the batch
        assert [row[0] for row in batch.result(timeout=60)] == [1, 2, 3]
        assert first.result(timeout=60) is False  # it stopped for the batch
        assert off.indexed(first)  # (waits for the last part)
        assert rest.result() is True
    assert fts_consistent(store) == 3000
    store.close()


def test_an_index_that_stopped_before_the_task_was_sent_goes_on_after_it(tmp_path):
    """The worker sees a task counted before the round's process has sent it: the index's
    part can stop, and be done, before the process looks at it. Its rest still goes after
    that task (before, it was sent only for a part not done yet: the index stayed stopped,
    and the round's process indexed what was left itself at the end of the stage)."""
    from .test_search import fts_consistent

    with _indexing_round(tmp_path, 3000) as (store, off):
        off.asked.value += 1  # a task counted, not sent yet: the index stops after a chunk
        first = off.index_pending()
        assert first.result(timeout=60) is False and off.indexing is first
        off.asked.value -= 1  # (the count as it is once that task is sent: see prefetch)
        batch = off.prefetch([1, 2, 3], 40, 0.5)
        assert batch is not None and off.indexing is not first  # its rest comes after it
        assert [row[0] for row in batch.result(timeout=60)] == [1, 2, 3]
        assert off.indexed(first) and off.indexing.result() is True
    assert fts_consistent(store) == 3000
    store.close()


def test_the_worker_meters_its_clustering_stage_tasks(tmp_path):
    """The worker adds what its index and the stage's writes took to the meter the round's
    process reads (Offload.outlasts): seconds and entries of each, and the entries the index
    has left."""
    from .test_search import harbour_store

    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path / "s.sqlite"
    store, _ = harbour_store(path, 1200, now)
    off = pipeline.Offload(str(path), SETTINGS, 1)
    m = off.meter
    try:
        assert m[pipeline.M_INDEX_LEFT] == -1 and m[pipeline.M_INDEX_N] == 0  # (unknown yet)
        off.sent = 1  # (as if it had parsed the round's feeds)
        assert off.indexed(off.index_pending())
        assert m[pipeline.M_INDEX_LEFT] == 0 and m[pipeline.M_INDEX_N] == 1200
        assert m[pipeline.M_INDEX_S] > 0
        rows = [(i, 100 + i, 1.0, "new") for i in (1, 2)]
        off.apply_clustering(rows, [], now, store.cluster_generation()).result(timeout=60)
        assert m[pipeline.M_APPLY_N] == 2 and m[pipeline.M_APPLY_S] > 0
    finally:
        off.close()
    store.close()


def test_a_batch_is_refused_when_the_worker_has_more_left_than_the_stage(tmp_path):
    """Offload.outlasts weighs what the worker has left (the index's entries, the rows not
    written), each at the time its kind took so far, against the stage's placing seconds
    left: a worker behind the stage is refused the batch (the stage reads it itself), and
    nothing is sent. The batch is not counted: it costs about as much on either side."""
    from aggregator.clustering import StageLeft

    off = pipeline.Offload(str(tmp_path / "s.sqlite"), SETTINGS, 1)
    m = off.meter
    try:
        # 1 ms an entry indexed, 0.5 ms a row written
        m[pipeline.M_INDEX_S], m[pipeline.M_INDEX_N] = 1.0, 1000
        m[pipeline.M_APPLY_S], m[pipeline.M_APPLY_N] = 1.0, 2000
        m[pipeline.M_INDEX_LEFT] = 1000
        # the worker's work left: 1.0 + 0.5 (1000 rows): 1.5 s
        assert off.outlasts(StageLeft(1.49, 1000))
        assert not off.outlasts(StageLeft(1.51, 1000))
        assert not off.outlasts(StageLeft(None, 1000))  # (the stage placed none yet)
        assert not off.outlasts(None)
        m[pipeline.M_INDEX_LEFT] = 0  # the index is done: 0.5 s
        assert not off.outlasts(StageLeft(0.51, 1000))
        # (refused for what it has already, whatever the batch's size)
        assert off.prefetch(list(range(1, 101)), 40, 0.5, StageLeft(0.49, 1000)) is None
        assert off.tasks == [] and off.asked.value == 0  # nothing was sent
    finally:
        off.close()


def test_a_task_cancelled_before_it_starts_is_not_counted_as_asked(tmp_path):
    off = pipeline.Offload(str(tmp_path / "s.sqlite"), SETTINGS, 1)
    try:
        off.asked.value = 3
        cancelled = Future()
        cancelled.cancel()
        off._uncount(cancelled)
        done = Future()
        done.set_result(None)
        off._uncount(done)
        assert off.asked.value == 2
    finally:
        off.close()


def test_the_pipe_from_a_worker_holds_a_prefetched_batch_in_few_reads(tmp_path):
    """A prefetched batch's features (megabytes) come back through the pool's result pipe,
    read on its manager thread, one read per pipeful and a wait for the GIL before each: the
    pipe holds PIPE_BYTES, not 64 KB (see pipeline._widen_result_pipe)."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no F_GETPIPE_SZ on this platform")
    with open("/proc/sys/fs/pipe-max-size") as f:
        if int(f.read()) < pipeline.PIPE_BYTES:
            pytest.skip("this system's pipe-max-size is below PIPE_BYTES")
    off = pipeline.Offload(str(tmp_path / "s.sqlite"), SETTINGS, 1)
    try:
        end = off.pool._result_queue._reader
        assert fcntl.fcntl(end.fileno(), fcntl.F_GETPIPE_SZ) == pipeline.PIPE_BYTES
        big = off.pool.submit(bytes, 3 * pipeline.PIPE_BYTES).result(timeout=60)
        assert big == bytes(3 * pipeline.PIPE_BYTES)
    finally:
        off.close()


def test_a_batch_may_wait_behind_writes_no_longer_than_itself(tmp_path):
    """The worker prepares an entry in about twice the time it writes a row: a batch asked for
    behind writes of at most as many rows as it has entries (in all) is asked of it; behind
    longer writes, or other work, the stage reads the batch itself."""
    off = pipeline.Offload(str(tmp_path / "s.sqlite"), SETTINGS, 1)
    try:
        write = Future()  # (a write of 100 rows, at work)
        off.tasks.append(write)
        off.writes[write] = 100
        assert off.busy() and off.busy(behind=99)
        assert not off.busy(behind=100)
        second = Future()
        off.tasks.append(second)
        off.writes[second] = 50
        assert off.busy(behind=149) and not off.busy(behind=150)
        other = Future()  # any other task
        off.tasks.append(other)
        assert off.busy(behind=10**6)
        for f in (write, second, other):
            f.set_result(None)
        assert not off.busy() and off.writes == {}
        batch = off.prefetch([1, 2, 3], 40, 0.5)  # (asked of the worker: nothing is ahead)
        assert batch is not None and batch.result(timeout=60) == []
    finally:
        off.close()
