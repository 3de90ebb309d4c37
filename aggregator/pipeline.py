"""One round of updates. The whole flow, one way:

    requests (feeds to fetch, from the store)
      | fetch      concurrently, at most ``fetch.concurrency`` at once   (fetch.py, I/O)
      | parse      bytes -> ParsedFeed; skipped for 304 / same body hash  (parse.py, pure)
      | normalize  ParsedFeed -> [Entry] with canonical URLs, text, UTC  (normalize.py, pure)
      | write      feed state + entries, one transaction per feed       (store, I/O)
    (parse, normalize and write run in worker processes in rounds of >= 100 feeds: Offload)
    then
    cluster        entries without a story, oldest first -> stories        (clustering.py)
      -> RoundSummary

A feed's failure is a value (its Outcome), never an exception, so one bad feed cannot stop the
round. ``clock`` is the only source of time; the pure stages get ``now`` from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from urllib.parse import urlsplit

from .clustering import ClusteringStage, ClusterSummary, StageLeft, prefetched
from .config import Settings
from .errors import ParseError
from .models import (
    Entry,
    FeedUpdateResult,
    FetchRequest,
    FetchResult,
    Outcome,
    ParsedFeed,
    RoundSummary,
)
from .normalize import normalize_feed
from .scheduling import FeedState, Hints, next_check
from .store.base import Store

log = logging.getLogger("aggregator")
Clock = Callable[[], datetime]
OnResult = Callable[[FeedUpdateResult], None]


def prepare(fetch: FetchResult, now: datetime) -> tuple[ParsedFeed | None, list[Entry], str | None]:
    """Pure: a fetch result -> (parsed feed, normalized entries, error message)."""
    if fetch.outcome is not Outcome.OK or fetch.body is None:
        return None, [], None
    # (imported here: the parsers' import, ~25 ms of feedparser's, is for the processes that
    # parse; a round of 1000 unchanged feeds takes under a second in all now)
    from .parse import parse_feed

    try:
        parsed = parse_feed(fetch.body, fetch.url, fetch.content_type)
    except ParseError as e:
        return None, [], str(e)
    return parsed, normalize_feed(parsed, fetch.feed_id, fetch.url, now), None


def schedule(store: Store, fetch: FetchResult, settings: Settings, now: datetime) -> None:
    """Store when the feed is due next (scheduling.next_check, pure) after this result."""
    state = store.schedule_state(fetch.feed_id, now)
    if state is None:
        return
    errors, error_since, per_day, feed_minutes = state
    decision = next_check(
        now,
        fetch.outcome,
        FeedState(fetch.feed_id, errors, error_since, per_day),
        Hints(fetch.max_age_seconds, feed_minutes, fetch.retry_after),
        settings.schedule,
    )
    store.set_schedule(
        fetch.feed_id,
        decision.next_check_at,
        decision.reason,
        decision.disabled_reason if decision.disable else None,
        now,
    )


Prepared = tuple[FetchResult, ParsedFeed | None, list[Entry], str | None]


def prepare_result(fetch: FetchResult, now: datetime) -> Prepared:
    """Pure: parse and normalize; a parse failure turns the fetch into a PARSE_ERROR one."""
    parsed, entries, error = prepare(fetch, now)
    if error:
        # A parse failure must not keep the validators: the next round has to fetch it again.
        fetch = FetchResult(
            feed_id=fetch.feed_id,
            outcome=Outcome.PARSE_ERROR,
            url=fetch.url,
            status_code=fetch.status_code,
            error=error,
            elapsed=fetch.elapsed,
        )
    return fetch, parsed, entries, error


def process_result(
    store: Store, fetch: FetchResult, now: datetime, settings: Settings | None = None
) -> FeedUpdateResult:
    return write_result(store, prepare_result(fetch, now), now, settings)


def write_result(
    store: Store, prepared: Prepared, now: datetime, settings: Settings | None = None
) -> FeedUpdateResult:
    """Store one feed's result (one transaction), then its next check."""
    fetch, parsed, entries, error = prepared
    written = store.write_feed_result(fetch, parsed, entries, error, now)
    if settings is not None:
        schedule(store, fetch, settings, now)
    return FeedUpdateResult(
        feed_id=fetch.feed_id,
        url=fetch.url,
        outcome=fetch.outcome,
        new_entries=written.new,
        updated_entries=written.updated,
        error=error or fetch.error,
        warning=parsed.warning if parsed else None,
    )


def write_many(
    store: Store, results: list[tuple[FetchResult, datetime]], settings: Settings | None
) -> list[FeedUpdateResult]:
    """Parse and normalize results (a fetch, its time), then write them in one
    ``store.batch()`` (on SQLite one transaction, each feed a savepoint in it, undone alone
    when it fails). The parsing is done first, so that the transaction does not hold the
    store's write lock meanwhile. One commit for several feeds logs each page they share (an
    index's, the feeds table's) once: 400 of the peer benchmark's feeds, written one
    transaction each, took 0.73-0.75 s of CPU, 16 to a transaction 0.46-0.50 s."""
    return write_prepared(store, prepare_many(results), settings)


def prepare_many(results: list[tuple[FetchResult, datetime]]) -> list[tuple[Prepared, datetime]]:
    """Pure: ``prepare_result`` of each (a fetch, its time), with its time."""
    return [(prepare_result(f, now), now) for f, now in results]


def write_prepared(
    store: Store, prepared: list[tuple[Prepared, datetime]], settings: Settings | None
) -> list[FeedUpdateResult]:
    """Write prepared results (each with its time) in one ``store.batch()``."""
    with store.batch():
        return [write_result(store, p, now, settings) for p, now in prepared]


Claim = Callable[[int], list[FetchRequest]]
LEASE_MARGIN_S = 10  # beyond the longest a claimed fetch can take: writing it, clock skew
# results with nothing to parse (a 304, an error) that go to a round's worker in one task
SMALL_BATCH = 64
# fetched feeds to parse that go to a worker in one task (one transaction) at most; fewer
# while the workers keep up (see run_round)
PARSE_BATCH = 8
PARSE_MIN_HERE = 4  # feeds waiting for the workers before this process parses some itself
WRITE_BACKLOG = 8  # parsed feeds that may wait for the writer thread
OFFLOAD_MIN_FEEDS = 100  # smaller rounds parse in-process: starting a process costs ~0.3 s


# -- parsing and writing in other processes ------------------------------------------------------
#
# A cold round spends as much CPU parsing, normalizing and writing feeds as fetching them. With
# ``fetch.parse_processes``, fetched results go to a process pool whose workers each hold their
# own connection to the store and run the same ``prepare_result`` + ``write_result`` (the same
# transaction per feed); the round's process fetches, and parses feeds itself only while the
# workers are behind (see run_round). Only the small FeedUpdateResult comes back. A worker that
# dies (killed, out of memory) costs nothing: its feeds in flight are processed again in this
# process (a feed's write is idempotent), and so is the rest of the round.

_worker_store: Store | None = None
_worker_settings: Settings | None = None
# The round's full-text indexing gives way to the worker's other tasks (Offload): the round's
# process counts the other tasks it gives the workers (``_worker_asked``, shared), this worker
# those it starts (``_worker_started``); while the first is ahead, another task waits behind the
# index, which then stops between two chunks (``index_pending``'s ``pause``) and goes on in the
# task sent after that one. None: the index never stops (several workers).
_worker_asked = None
_worker_started = 0
_worker_indexed = False  # this round's indexing is done (later parts have nothing to do)
# What the worker's clustering-stage tasks took (one worker; None with several): a shared array
# of doubles, read by the round's process to weigh asking the worker for the next batch against
# reading it itself (Offload.prefetch). Read without a lock: a figure may be one task behind
# another, which an estimate can bear. Its slots:
METER_SLOTS = 5
(
    M_INDEX_LEFT,  # entries the index has left to look at (-1 until it knows)
    M_INDEX_S,  # seconds the index took, ...
    M_INDEX_N,  # ... for this many entries
    M_APPLY_S,  # seconds the stage's writes took, ...
    M_APPLY_N,  # ... of this many rows
) = range(METER_SLOTS)
_worker_meter = None


def _worker_init(target: str, settings: Settings, asked=None, meter=None) -> None:
    global _worker_store, _worker_settings, _worker_asked, _worker_meter
    import atexit
    import gc
    import signal

    from .store import open_store

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the round's process decides when to stop
    # its exit is waited for by the round: without the interpreter's last collection
    atexit.register(gc.freeze)
    _exit_with_parent()
    _worker_store, _worker_settings = open_store(target, bulk=True), settings
    _worker_asked = asked
    _worker_meter = meter


def _exit_with_parent() -> None:
    """End this worker when the round's process is gone. A pool's worker outlives a parent
    killed with SIGKILL (it waits on its task queue, whose write end it holds itself), and
    would keep its store connection open for good. What it was writing rolls back."""
    import multiprocessing
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="aggregator-parent-watch", daemon=True).start()


def _worker_task() -> None:
    """A task other than the index starts (see ``_worker_asked``)."""
    global _worker_started
    _worker_started += 1


def _worker_write_many(results: list[tuple[FetchResult, datetime]]) -> list[FeedUpdateResult]:
    assert _worker_store is not None
    _worker_task()
    return write_many(_worker_store, results, _worker_settings)


def _worker_index() -> bool:
    """The round's full-text indexing, or what is left of it: True once it is all done, False
    when it stopped for a task waiting behind it (the task after that one goes on)."""
    global _worker_indexed
    assert _worker_store is not None
    if _worker_indexed:
        return True
    asked = _worker_asked
    pause = None if asked is None else (lambda: asked.value > _worker_started)
    meter = _worker_meter
    progress = None
    if meter is not None:
        since = time.perf_counter()

        def progress(left: int) -> None:
            nonlocal since
            if meter[M_INDEX_LEFT] >= left:  # (the first call of a part only says where it is)
                _metered(M_INDEX_S, M_INDEX_N, int(meter[M_INDEX_LEFT]) - left, since)
            meter[M_INDEX_LEFT] = left
            since = time.perf_counter()

    _worker_indexed = _worker_store.index_pending(pause, progress) is not None
    return _worker_indexed


def _metered(seconds: int, units: int, n: int, since: float) -> None:
    """Add a task's time since ``since`` and its ``n`` units to the meter (when there is one)."""
    meter = _worker_meter
    if meter is not None:
        meter[seconds] += time.perf_counter() - since
        meter[units] += n


def _worker_apply(rows: list, merged: list, now: datetime, generation: int | None) -> set[int]:
    assert _worker_store is not None
    _worker_task()
    since = time.perf_counter()
    done = _worker_store.apply_clustering(rows, merged, now, generation)
    _metered(M_APPLY_S, M_APPLY_N, len(rows), since)
    return done


def _worker_prefetch(ids: Sequence[int], summary_tokens: int, summary_weight: float) -> list[tuple]:
    assert _worker_store is not None
    _worker_task()
    return prefetched(_worker_store, ids, summary_tokens, summary_weight)


_worker_stage: ClusteringStage | None = None  # the round's clustering, when done here


def _worker_preload() -> bool:
    """Read the store's clusterer snapshot into this process (the round's clustering
    process, see Offload.process), which then does the round's clustering
    (``_worker_cluster``); whether a snapshot fit the store."""
    global _worker_stage
    assert _worker_store is not None and _worker_settings is not None
    _worker_stage = ClusteringStage(_worker_settings.cluster)
    return _worker_stage.preload(_worker_store)


def _worker_cluster(now: datetime) -> ClusterSummary:
    """The round's clustering stage, from what ``_worker_preload`` read, then its snapshot."""
    global _worker_stage
    assert _worker_store is not None and _worker_settings is not None
    stage, _worker_stage = _worker_stage, None
    if stage is None:
        stage = ClusteringStage(_worker_settings.cluster)
    summary = stage.run(_worker_store, now)
    stage.save(_worker_store)
    return summary


PIPE_BYTES = 1 << 20  # what the pipe of results from a round's workers holds


def _widen_result_pipe(pool) -> None:
    """Let the pool's pipe of results hold PIPE_BYTES, not Linux's 64 KB. This process reads
    a result on the pool's manager thread, one read per pipeful, and each read waits for the
    GIL, which the clustering stage holds while it places a batch (for up to the 5 ms switch
    interval, until the compiled clusterer next runs Python code): a prefetched batch's
    features (10,000 entries, megabytes) came back in 64 KB pieces, and the worker sat idle
    meanwhile: 0.27-0.34 s after each prefetch in a traced 1000-feed cold round here,
    0.04-0.08 s with a 1 MB pipe. A platform without F_SETPIPE_SZ (or a pool without this
    queue) keeps its pipe as it is. (The pipe of tasks, widened too, made no difference
    measured: its writer, a thread of this process, waits for the worker without the GIL.)"""
    import fcntl

    size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size is None:  # pragma: no cover - not Linux
        return
    # (OSError: a limit below PIPE_BYTES, /proc/sys/fs/pipe-max-size)
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pool._result_queue._reader.fileno(), size, PIPE_BYTES)


class Offload:
    """The process pool of a round (``fetch.parse_processes`` workers), started with
    ``spawn``: a fork would copy this process's threads' locks mid-flight."""

    def __init__(self, target: str, settings: Settings, processes: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        # the tasks other than the index given to the workers (see _worker_asked); with
        # several workers the index never stops (another one may take the task)
        self.asked = context.RawValue("q", 0) if processes == 1 else None
        # what the worker's stage tasks took (see _worker_meter)
        self.meter = context.RawArray("d", METER_SLOTS) if processes == 1 else None
        if self.meter is not None:
            self.meter[M_INDEX_LEFT] = -1
        self._pool_args = dict(
            mp_context=context,
            initializer=_worker_init,
            initargs=(target, settings, self.asked, self.meter),
        )
        self.pool = ProcessPoolExecutor(processes, **self._pool_args)
        _widen_result_pipe(self.pool)
        self.indexing: Future | None = None  # the index's last part given to a worker
        self.index_parts: set[Future] = set()  # and all its parts
        self.processes = processes
        self.broken = False
        self.sent = 0  # feeds sent to the workers (which start with the first)
        # set by the round: a process of its own reads the clusterer snapshot when the first
        # feed is parsed, and does the round's clustering (the round's process will not
        # cluster again: see update)
        self.cluster_there = False
        self.cluster_pool = None
        self.tasks: list[Future] = []  # what the workers were given and may not have done
        self.writes: dict[Future, int] = {}  # of those, the stage's writes: their rows

    @classmethod
    def for_round(cls, store: Store, settings: Settings, feeds: int) -> Offload | None:
        n = settings.fetch.parse_processes
        target = store.target
        if n < 1 or feeds < OFFLOAD_MIN_FEEDS or not target:
            return None
        return cls(target, settings, n)

    def process(self, results: list[tuple[FetchResult, datetime]]) -> Future | None:
        """Parse and write fetched feeds (a fetch, its time) in a worker, in one task
        (``write_many``: on SQLite, one transaction); the workers start with the first. None
        when the workers are gone. With ``cluster_there``, the first feed also starts the round's
        clustering process, one more, which reads the clusterer snapshot while this process
        goes on fetching and the workers parse. (A round with nothing to parse has nothing to
        cluster, and starts no clustering process.) In a worker, the snapshot held up the
        parsing: a 10% round of 5000 feeds fetched for 10.7 s instead of 6.5 s, and gained
        nothing."""
        if self.cluster_there and self.cluster_pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self.cluster_pool = ProcessPoolExecutor(1, **self._pool_args)
            self._cluster_submit(_worker_preload)
        self.sent += len(results)
        return self._submit(_worker_write_many, results)

    @property
    def preloading(self) -> bool:
        """Whether a clustering process was started to read the snapshot."""
        return self.cluster_pool is not None

    def _cluster_submit(self, fn, *args) -> Future | None:
        try:
            return self.cluster_pool.submit(fn, *args)
        except BrokenProcessPool:
            return None

    def write_many(self, results: list[tuple[FetchResult, datetime]]) -> Future | None:
        """Write (result, its time) pairs with nothing to parse (304s, errors) in a worker,
        in one task; None when the workers are gone."""
        return self._submit(_worker_write_many, results)

    def cluster(self, now: datetime) -> Future | None:
        """Start the round's clustering stage in the process that read the snapshot (wait for
        it with ``clustered``); None when there is none or it is gone."""
        return self._cluster_submit(_worker_cluster, now) if self.preloading else None

    def clustered(self, future: Future | None) -> ClusterSummary | None:
        """What ``cluster``'s stage did; None when it has to be done here (its process died:
        what it placed is stored, and the stage here takes the rest)."""
        try:
            if future is not None:
                return future.result()
        except BrokenProcessPool:
            pass
        log.warning("the clustering process died; this round clusters in its own process")
        return None

    def index_pending(self):
        """Start the round's full-text indexing in a worker (it overlaps with the clustering
        stage, and gives way to the stage's other tasks: see _worker_asked); a future, or None
        when the workers are gone or were never needed (nothing was parsed: the round's
        process looks for what is left to index, quickly)."""
        if not self.sent:
            return None
        self.indexing = self._submit(_worker_index)
        if self.indexing is not None:
            self.index_parts.add(self.indexing)
        return self.indexing

    def apply_clustering(
        self, rows: list, merged: list, now: datetime, generation: int | None
    ) -> Future | None:
        """Write a clustering batch's stories in a worker (ClusteringStage's ``apply``): the
        store's work overlaps the placing of the next batch. None when the workers are gone."""
        fut = self._submit(_worker_apply, rows, merged, now, generation)
        if fut is not None:
            self.writes[fut] = len(rows)
        return fut

    def prefetch(
        self,
        ids: Sequence[int],
        summary_tokens: int,
        summary_weight: float,
        left: StageLeft | None = None,
    ) -> Future | None:
        """Read the clustering stage's next batch in a worker, with its entries' features
        (ClusteringStage's ``prefetch``): computed there while this process places the batch
        before it. None when the workers are gone, and while each has work other than the
        round's full-text index (a stage's write): the batch would wait behind it, and the
        stage's next write behind the batch, so the stage reads and tokenizes that batch
        itself. (The workers write, prefetch when free, and index when nothing else waits;
        the stage's process places. Asked of a busy worker, batches came after
        PREFETCH_WAIT_S, were read here anyway, and the worker then computed them for
        nothing: in the bench's 5000-feed cold round the stage waited 0.35 s for each of 12 of
        them, behind the index, which went first then. Now the index gives way to a task sent
        behind it: see _worker_asked.)
        A batch may wait behind writes of as many rows as it has entries, in all (one worker):
        writing a row takes about half as long as preparing an entry, so it is still ready
        when the batch before it is placed. Refused behind the write of a batch of 2,000
        (0.04 s of work), the third batch of a traced 1000-feed cold round was read here: 0.15
        s of this process's time, with the worker idle.
        ``left``, what the stage has left to do, refuses the batch too when the worker has
        more work left than the stage (``outlasts``): the stage reads it itself while the
        worker catches up, rather than both finish with the worker's last part (most often
        the index) alone."""
        if self.busy(behind=len(ids)) or self.outlasts(left):
            return None
        return self._submit(_worker_prefetch, ids, summary_tokens, summary_weight)

    def outlasts(self, left: StageLeft | None) -> bool:
        """Whether the worker has more work left than the stage (``left``): the index's
        entries left and the rows not written yet, each at the time the worker's tasks of its
        kind took so far (none yet: not counted), against the stage's placing seconds left.
        The batch asked for is not counted: preparing it takes about as long there as reading
        it takes here, so given to a worker that keeps up it ends the stage sooner, and read
        here by a worker that would not, too. (Counted on the worker's side alone, batches
        were refused to a worker that would have ended a little after the placing: the stage
        read them, 0.2 s each in the 1000-feed cold round, and ended later than the worker
        would have; four alternating pairs of that round: 4.20-4.36 s against 4.28-4.52 s.)
        False without a meter (several workers) or an estimate of the stage's."""
        m = self.meter
        if m is None or left is None or left.seconds is None:
            return False

        def rate(seconds: int, units: int) -> float:
            return m[seconds] / m[units] if m[units] > 0 else 0.0

        index = max(m[M_INDEX_LEFT], 0.0) * rate(M_INDEX_S, M_INDEX_N)
        writes = left.unwritten * rate(M_APPLY_S, M_APPLY_N)
        return index + writes > left.seconds

    def busy(self, behind: int = 0) -> bool:
        """Whether every worker has a task at work or waiting, the index apart when it gives
        way (one worker: see _worker_asked), and writes of at most ``behind`` rows in all
        too."""
        pending = self._pending()
        if self.asked is not None:
            pending = [t for t in pending if t not in self.index_parts]
            if behind and sum(self.writes.get(t, behind + 1) for t in pending) <= behind:
                return False
        return len(pending) >= self.processes

    def _pending(self) -> list[Future]:
        """The tasks given to the workers that are not done (``tasks``, the done dropped)."""
        self.tasks = [t for t in self.tasks if not t.done()]
        if self.writes:
            self.writes = {t: n for t, n in self.writes.items() if not t.done()}
        return self.tasks

    def _submit(self, fn, *args) -> Future | None:
        """``fn`` in a worker; None when the workers are gone. A task that dies with its worker
        marks the pool lost (``_check``): the caller does that task, and the rest, itself."""
        if self.broken:
            return None
        other = fn is not _worker_index and self.asked is not None
        if other:
            self.asked.value += 1  # (before the task can start)
        try:
            fut = self.pool.submit(fn, *args)
        except BrokenProcessPool:
            self.lost()
            return None
        fut.add_done_callback(self._check)
        self._pending().append(fut)
        if other:
            fut.add_done_callback(self._uncount)
            if self._index_stops():
                # the index stops for this task: what is left of it goes on after it
                rest = self._submit(_worker_index)
                if rest is not None:
                    self.indexing = rest
                    self.index_parts.add(rest)
        return fut

    def _index_stops(self) -> bool:
        """Whether the round's index stops for a task just sent, and no part of it is left to
        go on after that task: its last part is at work or waiting, or has stopped already.
        The worker sees the task counted (``asked``) before this process looks at the part,
        and a part at the end of a chunk stops at once: it can be done, stopped, by then.
        Looking only for a part not done, the rest was never sent in that case: the index
        stayed stopped to the end of the stage, which meanwhile read every batch itself (the
        worker, idle, still had the index to do by its meter: see ``outlasts``) and then
        indexed what was left itself. The bench's 5000-feed cold round, six times each way,
        alternating: before, 2 of 6 ended with the index stopped (228,000 and 134,000 entries
        left to this process) and clustered for 22.0 and 19.5 s, the others for 15.5-16.8 s;
        with this, 6 of 6 indexed in the worker, clustering for 15.7-16.4 s."""
        index = self.indexing
        if index is None:
            return False
        if not index.done():
            return True
        return not index.cancelled() and index.exception() is None and index.result() is False

    def _uncount(self, fut: Future) -> None:
        """A task cancelled before it started never counts itself (see _worker_asked)."""
        if fut.cancelled():
            self.asked.value -= 1

    def _check(self, fut: Future) -> None:
        if not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool):
            self.lost()

    def indexed(self, future) -> bool:
        """Wait for ``index_pending``'s work (its last part); False when it has to be done
        here."""
        if future is None or self.indexing is None:
            return False
        try:
            return bool(self.indexing.result())  # (``future`` is its first part)
        except BrokenProcessPool:
            return False

    def lost(self) -> None:
        # (called from the pool's thread too: warned before ``broken`` says so, so that whoever
        # sees it broken sees the warning given)
        if not self.broken:
            log.warning(
                "a parsing process died (killed, out of memory, or it could not start: a"
                " script that runs rounds must run them under `if __name__ == '__main__':`);"
                " this round goes on in its own process"
            )
            self.broken = True

    def pids(self) -> list[int]:
        """The workers' process ids, and the clustering process's (for tests)."""
        pools = [self.pool] + ([self.cluster_pool] if self.cluster_pool is not None else [])
        return [p.pid for pool in pools for p in (pool._processes or {}).values()]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.cluster_pool is not None:
            self.cluster_pool.shutdown(wait=True, cancel_futures=True)


async def run_round(
    store: Store,
    requests: Sequence[FetchRequest],
    settings: Settings,
    clock: Clock,
    on_result: OnResult | None = None,
    stop: threading.Event | None = None,
    claim: Claim | None = None,
    offload: Offload | None = None,
) -> RoundSummary:
    """Fetch ``requests`` concurrently (a global and a per-host limit) and process each result
    as it arrives. With ``claim`` (a store shared by several workers), feeds come from
    ``claim(n)`` instead, a few at a time, so that no more are leased than are being fetched.
    Setting ``stop`` cancels the fetches still in flight; what is complete is already written.

    Parsing and normalizing run on the event loop's thread; every store call (writes, claims)
    runs, in order, on one writer thread, so that the database's work (SQLite's, which releases
    the GIL, or PostgreSQL's, on another core) overlaps with the next feed's parsing. At most
    ``WRITE_BACKLOG`` parsed feeds wait for the writer. With ``offload``, parsing and writing
    happen in its processes, and in batches of this process's own while they are behind (parsed
    on a parser thread, then written on the writer thread)."""
    # (imported here: httpx's import, 0.15-0.22 s here, is for the process that fetches; the
    # workers import this module and never fetch)
    from .fetch import fetch_feed, make_client

    started = clock()
    results: list[FeedUpdateResult] = []
    limit = asyncio.Semaphore(settings.fetch.concurrency)
    per_host = settings.fetch.per_host
    hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))
    window = settings.fetch.concurrency

    async with make_client(settings.fetch) as client:
        # A fetched body waits for its parsing: at most this many exist at once (fetching is
        # faster than parsing, and 5,000 bodies of 100 KB waiting would be 500 MB).
        buffered = asyncio.Semaphore(2 * settings.fetch.concurrency)

        async def fetch(req: FetchRequest) -> FetchResult:
            await buffered.acquire()  # released once the result is parsed
            try:
                async with limit:
                    return await fetch_feed(client, req, settings.fetch, clock())
            except BaseException:
                buffered.release()
                raise

        async def one(req: FetchRequest) -> FetchResult:
            if not per_host:
                return await fetch(req)
            async with hosts[urlsplit(req.url).hostname or ""]:
                return await fetch(req)

        queue = deque(requests)
        tasks: set[asyncio.Task] = set()
        # tasks land here as they finish (asyncio.wait over the whole set costs O(tasks) per
        # call, and a round without claims has all of its feeds' tasks pending)
        finished: asyncio.Queue[asyncio.Task] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-writer")
        # this process parses its batches on a thread of their own: the writer stays free for
        # the writes and for the claims of a shared store, which a batch being parsed on it
        # held up (the fetching ran dry meanwhile)
        parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-parser")
        writes: deque[asyncio.Future] = deque()
        # what an offloaded future writes (fetches with their times), to do it again here if
        # its worker dies
        offloaded: dict[asyncio.Future, list[tuple[FetchResult, datetime]]] = {}
        small: list[tuple[FetchResult, datetime]] = []  # the next batch of small results
        # the workers need a queue deep enough to stay busy; the bodies in it are bounded by
        # ``buffered``, released as each is written
        backlog = 2 * settings.fetch.concurrency if offload is not None else WRITE_BACKLOG
        # Fetched feeds to parse wait in ``parsing`` for a worker's task or one of this
        # process's; ``dispatch`` hands them out, up to PARSE_BATCH per task (a task's feeds
        # are written in one transaction, see write_many). A worker gets a task while fewer
        # than ``ahead`` of its tasks are not done (one at work, one waiting for it), so a
        # worker that keeps up gets each feed at once, and one that is behind gets several.
        # While the workers are behind, this process, idle but for fetching, parses and
        # writes a batch itself (one at a time: parsed on the parser thread, then written on the
        # writer thread), so both cores work while it fetches.
        parsing: deque[tuple[FetchResult, datetime]] = deque()
        queued: deque[Future] = deque()  # the workers' tasks (their pool's futures, done as
        # soon as a worker is, not when this loop gets to them)
        here: asyncio.Future | None = None  # this process's last parsing task
        ahead = offload.processes + 1 if offload is not None else 0

        def workers_free() -> bool:
            while queued and queued[0].done():
                queued.popleft()
            return sum(not f.done() for f in queued) < ahead

        def dispatch(*_) -> None:
            """Hand the feeds waiting in ``parsing`` to a worker, or to this process while the
            workers are behind; their writes go to ``writes``."""
            nonlocal here
            while parsing:
                if not offload.broken and workers_free():
                    fut = send_parsing(offload.process)
                elif offload.broken or (
                    len(parsing) >= PARSE_MIN_HERE and (here is None or here.done())
                ):
                    fut = here = send_parsing(None)
                else:
                    return
                writes.append(fut)

        def stopping() -> bool:
            return stop is not None and stop.is_set()

        async def refill() -> None:
            while True:
                while queue and (claim is None or len(tasks) < window):
                    task = asyncio.create_task(one(queue.popleft()))
                    task.add_done_callback(finished.put_nowait)
                    tasks.add(task)
                if claim is None or len(tasks) >= window or stopping():
                    return
                more = await loop.run_in_executor(writer, claim, window - len(tasks))
                if not more:
                    return
                queue.extend(more)

        def in_process(fetch: FetchResult) -> asyncio.Future:
            now = clock()
            prepared = prepare_result(fetch, now)
            return loop.run_in_executor(writer, write_result, store, prepared, now, settings)

        def submit(fetch: FetchResult) -> asyncio.Future | None:
            """Parse and write ``fetch``: in an offload process, or here.
            A future of its result, or of a batch's results; None while it waits in a batch."""
            parse = fetch.outcome is Outcome.OK and fetch.body is not None
            if offload is not None and parse:
                parsing.append((fetch, clock()))
                dispatch()
                return None
            if offload is not None and not parse:
                # A result with nothing to parse (a 304, an error) is a small write. Written
                # here, on the writer thread, 1000 of them took 0.3 s of CPU and the GIL
                # handovers between that thread and the fetching loop more: an all-304 round
                # of 1000 feeds took 1.43-1.50 s. Sent to the worker one task per feed, the
                # trips between processes cost more still. SMALL_BATCH of them per task:
                # 0.87-1.01 s.
                small.append((fetch, clock()))
                buffered.release()
                return flush() if len(small) >= SMALL_BATCH else None
            fut = in_process(fetch)
            buffered.release()
            return fut

        async def parse_then_write(batch: list[tuple[FetchResult, datetime]]) -> list:
            prepared = await loop.run_in_executor(parser, prepare_many, batch)
            return await loop.run_in_executor(writer, write_prepared, store, prepared, settings)

        def in_process_batch(batch: list[tuple[FetchResult, datetime]]) -> asyncio.Future:
            """Parse ``batch`` on the parser thread, then write it in one transaction on the
            writer thread (``write_many``, in two steps)."""
            return asyncio.ensure_future(parse_then_write(batch))

        def send_parsing(to_worker) -> asyncio.Future:
            """Up to PARSE_BATCH feeds of ``parsing`` in one task: ``to_worker``'s (Offload's
            ``process``), else, or if the workers are gone, here (``in_process_batch``). Each feed
            holds its ``buffered`` slot until written."""
            batch = [parsing.popleft() for _ in range(min(PARSE_BATCH, len(parsing)))]
            sent = to_worker(batch) if to_worker is not None else None
            if sent is None:
                fut = in_process_batch(batch)
            else:
                queued.append(sent)
                fut = asyncio.wrap_future(sent)
                offloaded[fut] = batch  # to do it again here if the worker dies
            fut.add_done_callback(lambda _: [buffered.release() for _ in batch])
            fut.add_done_callback(dispatch)  # (its worker, or this process, is free again)
            return fut

        def flush() -> asyncio.Future | None:
            """Send the batch of small results to the worker (here, if it is gone). Written
            here, sparing a round with nothing to parse its worker's start, an all-304 round
            of 1000 feeds took less CPU (0.37 s against 0.455 s) but longer (0.44 s against
            0.425 s, medians of six): the writer thread and the fetching loop take turns at
            the GIL."""
            if not small:
                return None
            batch = list(small)
            small.clear()
            sent = offload.write_many(batch)
            if sent is None:
                return in_process_batch(batch)
            fut = asyncio.wrap_future(sent)
            offloaded[fut] = batch
            return fut

        async def settle(keep: int) -> None:
            """Wait until at most ``keep`` writes are pending; report the finished ones."""
            while writes and (len(writes) > keep or writes[0].done()):
                fut = writes.popleft()
                batch = offloaded.pop(fut, None)
                try:
                    res = await fut
                except BrokenProcessPool:  # (its worker died; the pool is marked lost)
                    res = await in_process_batch(batch)
                for r in res if isinstance(res, list) else [res]:
                    results.append(r)
                    if on_result is not None:
                        on_result(r)

        watcher = asyncio.create_task(_cancel_on(stop, tasks)) if stop is not None else None
        try:
            await refill()
            while tasks:
                done = [await finished.get()]
                while not finished.empty():
                    done.append(finished.get_nowait())
                for task in done:
                    tasks.discard(task)
                    if task.cancelled():
                        continue
                    fut = submit(task.result())
                    if fut is not None:
                        writes.append(fut)
                    await settle(backlog)
                if stopping():
                    break
                await refill()
            while parsing:  # (the fetching is over: no more feeds to wait for)
                writes.append(send_parsing(offload.process))
            fut = flush()
            if fut is not None:
                writes.append(fut)
            await settle(0)
        finally:
            for t in tasks:
                t.cancel()
            if watcher is not None:
                watcher.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # what was fetched is written, even when stopping; the writer is idle after this
            try:
                while parsing:
                    writes.append(send_parsing(offload.process))
                if small:
                    writes.append(flush())
            except Exception:  # (the round is failing already: that error is the one)
                log.exception("the round's last fetched feeds could not be written")
            await asyncio.gather(*writes, return_exceptions=True)
            parser.shutdown(wait=True)
            writer.shutdown(wait=True)
    return RoundSummary(started_at=started, finished_at=clock(), results=tuple(results))


async def _cancel_on(stop: threading.Event, tasks: set[asyncio.Task]) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for t in list(tasks):
        t.cancel()


def worker_id() -> str:
    """Who holds a lease: host and process (the pid is read each time: forks differ)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Claimer:
    """Leases feeds for one round on a shared store, walking the feeds by id."""

    def __init__(self, store, settings, clock, feed_ids, due_only):
        self.store, self.clock, self.feed_ids, self.due_only = store, clock, feed_ids, due_only
        f = settings.fetch
        # A claimed feed may wait for others of its host before its own fetch starts; then
        # its result is written. A lease shorter than that would hand it to a second worker.
        waves = -(-f.concurrency // f.per_host) if f.per_host else 1
        self.lease = max(settings.store.lease_seconds, waves * f.total_timeout + LEASE_MARGIN_S)
        self.worker = worker_id()
        self.after = 0
        self.skipped = 0

    def __call__(self, n: int) -> list[FetchRequest]:
        while True:
            now = self.clock()
            got = self.store.claim_feeds(
                self.worker, now, n, self.lease, self.after, self.feed_ids, self.due_only
            )
            if not got:
                return []
            self.after = got[-1].feed_id
            due = [r for r in got if r.retry_after is None or r.retry_after <= now]
            self.skipped += len(got) - len(due)
            if due:
                return due


def update(
    store: Store,
    settings: Settings,
    clock: Clock,
    feed_ids: Sequence[int] | None = None,
    on_result: OnResult | None = None,
    on_start: Callable[[int], None] | None = None,
    clustering: ClusteringStage | None = None,
    due_only: bool = False,
    stop: threading.Event | None = None,
    keep_clusterer: bool = True,
) -> RoundSummary:
    """Synchronous entry point: one round over ``feed_ids`` (all live feeds when None; with
    ``due_only``, those whose scheduled check has come), then the clustering stage over every
    entry that has no story yet. The CLI's `update` and the daemon's tick both call this.
    On a store shared by several workers, feeds are leased as the round goes
    (``store.claim_feeds``), so each is fetched by one worker.

    ``keep_clusterer=False`` says this process will not cluster again (the CLI's one-shot
    `update`). A round that then parses in a worker, with a clusterer snapshot next to the
    store and none in ``clustering``, starts a clustering process with its first feed to
    parse: it reads the snapshot while the round fetches, then places the round's entries and
    writes the snapshot. Reading it no longer waits for the fetch to end. The daemon keeps its
    clusterer in memory between rounds instead."""
    now = clock()
    offload = None
    stage = clustering or ClusteringStage(settings.cluster)
    snapshot = store.cluster_snapshot_path()
    cluster_there = (
        not keep_clusterer
        and stage.clusterer is None
        and snapshot is not None
        and snapshot.exists()
    )

    def offload_for(feeds: int) -> Offload | None:
        off = Offload.for_round(store, settings, feeds)
        if off is not None:
            off.cluster_there = cluster_there
        return off

    try:
        if store.shared:
            claimer = _Claimer(store, settings, clock, feed_ids, due_only)
            expected = store.feed_counts(now)["due" if due_only else "total"]
            if feed_ids is not None:
                expected = min(expected, len(feed_ids))
            if on_start is not None:
                on_start(expected)
            offload = offload_for(expected)
            try:
                summary = asyncio.run(
                    run_round(store, [], settings, clock, on_result, stop, claimer, offload)
                )
            finally:
                store.release_leases(claimer.worker)
            skipped = claimer.skipped
        else:
            requests = store.fetch_requests(feed_ids, due_before=now if due_only else None)
            due = [r for r in requests if r.retry_after is None or r.retry_after <= now]
            if on_start is not None:
                on_start(len(due))
            offload = offload_for(len(due))
            # a first round writes into an empty store: its index of entries by time is built
            # once its entries are in, before the clustering stage reads by time (and built
            # by the next round if this process dies first)
            store.defer_indexes()
            try:
                summary = asyncio.run(
                    run_round(store, due, settings, clock, on_result, stop, offload=offload)
                )
            finally:
                store.restore_indexes()
            skipped = len(requests) - len(due)
        clustered = None
        if offload is not None and offload.preloading:
            # the clustering process read the snapshot during the fetch: it places the
            # round's entries while this process indexes them for search
            placing = offload.cluster(clock())
            store.index_pending()
            clustered = offload.clustered(placing)
        if clustered is None:
            # the full-text index, in one batch per round: in a worker while this process
            # clusters, once the stage has asked it for its second batch
            indexing = None

            def index() -> None:
                nonlocal indexing
                indexing = offload.index_pending() if offload is not None else None

            apply = offload.apply_clustering if offload is not None else None
            prefetch = offload.prefetch if offload is not None else None
            # (a one-shot round's snapshot is written next: its body while the last write is)
            clustered = stage.run(
                store,
                clock(),
                apply=apply,
                save_ahead=not keep_clusterer,
                prefetch=prefetch,
                on_first_batch=index,
            )
            if indexing is None:  # (the stage returned before its first batch: not leading)
                index()
            if offload is None or not offload.indexed(indexing):
                store.index_pending()
    finally:
        if offload is not None:
            offload.close()
    return RoundSummary(
        started_at=summary.started_at,
        finished_at=clock(),
        results=summary.results,
        skipped=skipped,
        clustered=clustered.entries,
        stories_touched=clustered.stories_touched,
        clustering_deferred=clustered.deferred,
        fetched_at=summary.finished_at,
    )
