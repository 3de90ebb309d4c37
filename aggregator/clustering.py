"""The clustering stage: unclustered entries from the store -> the pure Clusterer -> stories.

    stage = ClusteringStage(settings.cluster)
    summary = stage.run(store, now)

Every caller (`aggregator update`, the daemon, `aggregator eval`) goes through ``run``. It takes
every stored entry that has no story yet, oldest first, so an entry whose round crashed after
its feed was written is simply clustered by the next run. The in-memory Clusterer is kept
between runs and rebuilt from the store's recent window when the store changed under it
(manual corrections bump a generation counter) or when it has none yet. The store refuses a
write made from a clusterer older than the last correction (ClusterConflictError): the stage
rebuilds and places the batch again.

A process that ends keeps its clusterer in a snapshot next to the store (SQLite:
``<db>.clusterer``, written by ``save``, from ``Aggregator.close``), so that the next
`aggregator update` picks it up instead of rebuilding it from the window: 0.8 s to read against
3.5 s to rebuild for the 1000-feed bench's 50,000-entry window, measured here (reading and
writing pause the cyclic garbage collector: with it, reading took 0.3 s more). It is a cache:
read only when the store's ``cluster_fingerprint`` (placements, merges, removals, corrections),
the settings and the clusterer's own code are what they were when it was written; else the
window is rebuilt as before.

One process per store clusters: ``store.lead_clustering()`` says whether it is this one (on
PostgreSQL, where several workers share the store, the holder of an advisory lock; the others
leave their new entries to it, and take over when it goes away).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from .dedup.base import ClusterSettings, gc_paused
from .errors import ClusterConflictError
from .models import ClusterItem
from .store.base import Store

if TYPE_CHECKING:
    from .dedup.cluster import Clusterer, Item

# Writes a batch's stories elsewhere: (rows, merges, now, generation) -> a future of the
# stories touched, or None when it cannot (then the stage writes them itself).
Apply = Callable[[list, list, datetime, int | None], "Future[set[int]] | None"]


class StageLeft(NamedTuple):
    """What a clustering stage has left to do when it asks for its next batch: the seconds of
    placing, at the time its placing took so far (None before it placed any), and the entries
    whose stories are not written yet."""

    seconds: float | None
    unwritten: int


# Reads the next batch elsewhere and computes its entries' features there: (entry ids,
# summary_tokens, summary_weight, what the stage has left) -> a future of ``prefetched`` rows,
# or None when it cannot (or would rather not: the stage then reads the batch itself).
Prefetch = Callable[[Sequence[int], int, float, StageLeft], "Future[list[tuple]] | None"]


class ClusterSummary(msgspec.Struct, frozen=True):
    entries: int = 0
    stories_touched: int = 0
    merges: int = 0
    seconds: float = 0.0
    deferred: bool = False  # another process leads clustering on this store


def _cluster():
    """The clusterer's module (``dedup.cluster``), imported when first needed: a query, or a
    round with nothing to place, does without it (see dedup/base.py)."""
    global _cluster_module
    if _cluster_module is None:
        from .dedup import cluster

        _cluster_module = cluster
    return _cluster_module


_cluster_module = None


def _items(rows: list[tuple]) -> list[Item]:
    """``prefetched`` rows as the clusterer's items (their features still packed)."""
    if not rows:  # (a round with nothing to place does without the clusterer's module)
        return []
    item = _cluster().Item
    return [
        item(eid, str(feed), url, "", "", published, packed)
        for eid, feed, url, published, packed in rows
    ]


def to_item(c: ClusterItem) -> Item:
    return _cluster().Item(
        entry_id=c.entry_id,
        source=str(c.feed_id),
        url=c.url,
        title=c.title,
        summary=c.summary,
        published=c.published,
    )


def prefetched(
    store: Store, ids: Sequence[int], summary_tokens: int, summary_weight: float
) -> list[tuple]:
    """Those of these entries still without a story, in this order, each as (entry id, feed
    id, url, published, its features packed) (a Prefetch's work, in the process that does
    it; and the stage's own, for a batch it reads itself)."""
    if not ids:  # (a round with nothing to place: nothing to read, or to import)
        return []
    return _packed_rows(store.unclustered_items(ids), summary_tokens, summary_weight)


def _packed_rows(
    entries: Iterable[ClusterItem], summary_tokens: int, summary_weight: float
) -> list[tuple]:
    """The entries as ``prefetched`` gives them: their features computed and packed together
    (``text.pack_many``: the clusterer then looks each distinct token up once)."""
    from .dedup.text import features, pack_many

    heads = []  # (entry id, feed id, url, published) of each

    def each():
        # one entry at a time: its text and its Features are dropped once it is packed
        # (packing a list of the Features of 10,000 of the bench's entries peaked 13.9 MB
        # higher, tracemalloc)
        for c in entries:
            heads.append((c.entry_id, c.feed_id, c.url, c.published))
            yield features(c.title, c.summary, summary_tokens, summary_weight)

    packed = pack_many(each())
    return [(*head, p) for head, p in zip(heads, packed, strict=True)]


# With a prefetch (a round's worker reads the batches ahead and computes their features), the
# first batch is read and tokenized here: this many entries, which take about as long to place
# as the worker takes to prepare the next full batch, so that most are prepared there.
FIRST_BATCH = 2_000
# How long placing waits for a prefetched batch before it reads that batch itself. A busy worker
# is not asked for one (Offload.prefetch), so this is for a worker that was free and is slow
# (reading and tokenizing 10,000 entries here takes ~0.5 s).
PREFETCH_WAIT_S = 0.25
# In a long queue (at least LONG_QUEUE batches), a write waits for this many batches' entries
# (the last one apart). A write's cost per entry falls with its size: its rows are spread over
# the entries table (placed in time order, stored in arrival order), and its commit logs, and
# the checkpoint after it copies, each page it changed once, however many of its rows the page
# holds. The 5000-feed bench's 252,500 assignments (bench/cpu_budget.py --write-batch): 4.89 s
# of CPU 10,000 a write, 3.63 s 20,000, 3.27 s 40,000; the 1000-feed bench's 50,500: 0.49-0.54
# s, and 0.47-0.48 s 40,000 a write. So a short queue keeps writing each batch as soon as the
# worker is free: little to gain, and its last write, on the round's critical path, would grow.
WRITE_FLOOR = 4
LONG_QUEUE = 16

# 2: token statistics as one string of tokens and arrays; 3: the header in a fixed space at the
# start of the file, the body after it (so the body can be written before the header is known);
# 4: the stories in columns, their tokens as numbers (dedup/cluster.py: _pack_stories)
SNAPSHOT_FORMAT = 4
HEADER_SPACE = 4096  # bytes the header's pickle may take


def _code_key() -> str | None:
    """A digest of the clusterer's source: a snapshot is only read by the code that wrote it."""
    return _cluster().source_digest(("cluster.py", "text.py"))


def _discard(ahead: tuple | None) -> None:
    """Remove the temporary file of a snapshot written ahead (its first item), if any."""
    if ahead is not None:
        with contextlib.suppress(OSError):
            ahead[0].unlink()


def _covers(c: Clusterer, earliest: datetime) -> bool:
    """Whether ``c``'s window still reaches back to an entry published at ``earliest``."""
    return earliest.timestamp() >= c._horizon - c._window


class _Paced:
    """A file whose writes each call ``between`` first (``ClusteringStage._body``)."""

    __slots__ = ("between", "f")

    def __init__(self, f, between: Callable[[], None]) -> None:
        self.f, self.between = f, between

    def write(self, data) -> int:
        self.between()
        return self.f.write(data)


class _IdBits:
    """A set of story ids (non-negative ints), one bit each. The bench's 5000-feed cold round
    touches 133,634 stories: a set of their ids raised its peak RSS from 482.5 to 488.5 MiB."""

    __slots__ = ("bits",)

    def __init__(self) -> None:
        self.bits = bytearray()

    def add(self, ids: Iterable[int]) -> None:
        bits = self.bits
        for i in ids:
            byte = i >> 3
            if byte >= len(bits):
                bits.extend(bytes(byte - len(bits) + 1 + (len(bits) >> 1)))
            bits[byte] |= 1 << (i & 7)

    def discard(self, ids: Iterable[int]) -> None:
        bits = self.bits
        for i in ids:
            byte = i >> 3
            if byte < len(bits):
                bits[byte] &= ~(1 << (i & 7)) & 0xFF

    def __len__(self) -> int:
        return int.from_bytes(self.bits, "little").bit_count()


class ClusteringStage:
    def __init__(self, settings: ClusterSettings | None = None):
        self.settings = settings or ClusterSettings()
        self.clusterer: Clusterer | None = None
        self.generation: int | None = None
        self.term: int | None = None  # the store's lead_term the clusterer was built in
        self.unsaved = False  # the clusterer changed since it was read or saved
        self.restored = 0  # clusterers read from a snapshot (instead of rebuilt)
        # the store's cluster_fingerprint when ``preload`` read the snapshot, until ``run``
        self._preloaded: tuple | None = None
        self._matched: tuple | None = None  # the fingerprint the last snapshot read matched
        self._placed = 0  # batches placed, ever (a snapshot body written ahead is of one count)
        # run's snapshot body written ahead, for save: (its file, clusterer, _placed, path)
        self._ahead: tuple | None = None

    # -- the snapshot ----------------------------------------------------------------------------

    def _header(self, store: Store) -> tuple | None:
        code = _code_key()
        if code is None:
            return None
        return (SNAPSHOT_FORMAT, code, self.settings, store.cluster_fingerprint())

    def save(self, store: Store) -> bool:
        """Write the clusterer to the store's snapshot path when it changed since it was
        read or written; a temporary file renamed over the old one, so a reader sees a
        whole snapshot or the previous one. Returns whether it wrote one. When ``run`` wrote
        the body ahead (``save_ahead``) and nothing was placed since, only the header is
        written now: it holds the store's fingerprint, known once the last write is done."""
        path = store.cluster_snapshot_path()
        ahead, self._ahead = self._ahead, None
        if path is None or self.clusterer is None or not self.unsaved:
            _discard(ahead)
            return False
        header = self._header(store)
        if header is None:
            _discard(ahead)
            return False
        if ahead is not None and ahead[1:] != (self.clusterer, self._placed, str(path)):
            _discard(ahead)  # placed since, or another store's
            ahead = None
        tmp = ahead[0] if ahead is not None else self._body(path)
        try:
            head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
            if len(head) > HEADER_SPACE:
                raise ValueError(f"a snapshot header of {len(head)} bytes")
            with tmp.open("r+b") as f:
                f.write(head)
            os.replace(tmp, path)
        except BaseException:
            _discard((tmp,))
            raise
        self.unsaved = False
        return True

    def _body(self, path: Path, between: Callable[[], None] | None = None) -> Path:
        """The clusterer written to a new temporary file next to ``path``, after the space
        its header will take; ``between`` is called before each write to the file."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                f.seek(HEADER_SPACE)
                self.clusterer.dump(f if between is None else _Paced(f, between))
        except BaseException:
            _discard((tmp,))
            raise
        return tmp

    def _write_ahead(self, store: Store, between: Callable[[], None] | None = None) -> None:
        """``run``'s last write is in flight (in the round's worker): write the snapshot's body
        meanwhile, for ``save`` to finish (``between``: see ``_body``). (That write made the
        process wait ~0.3 s at the end of the bench's 1000-feed cold round, and ``save`` took
        as long again after it.)"""
        path = store.cluster_snapshot_path()
        if path is None or self.clusterer is None or _code_key() is None:
            return
        _discard(self._ahead)
        self._ahead = None
        # (if it cannot be written, save writes it all, or says why it cannot)
        with contextlib.suppress(OSError, pickle.PicklingError, RecursionError):
            self._ahead = (self._body(path, between), self.clusterer, self._placed, str(path))

    def preload(self, store: Store) -> bool:
        """Read the store's snapshot now, ahead of ``run`` (a one-shot round's clustering
        process does, while the round fetches: see pipeline.update). ``run`` goes on from it
        only if the stored stories are still what they were (no other process placed, merged
        or corrected meanwhile); else it reads or rebuilds as usual. Returns whether a
        snapshot fit the store."""
        if self.clusterer is not None or not store.lead_clustering():
            return False
        c = self._restore(store, None)
        if c is None:
            return False
        self.clusterer, self.term = c, store.lead_term
        self.generation = store.cluster_generation()
        # the stories as the snapshot has them: the fingerprint its header matched before it
        # was read (asked for again after the read, it took in what another process placed
        # during the read, which the snapshot lacks; and at 1,000,000 entries each asking
        # scans them all, 0.19 s)
        self._preloaded = self._matched
        return True

    def _restore(self, store: Store, earliest: datetime | None) -> Clusterer | None:
        """The snapshot's clusterer when it matches the store as it is now and its window
        covers ``earliest`` (when given); else None (the caller rebuilds)."""
        path = store.cluster_snapshot_path()
        if path is None or not path.exists():
            return None
        try:
            with path.open("rb") as f:
                header = self._header(store)
                if header is None or pickle.load(f) != header:
                    return None
                self._matched = header[3]
                f.seek(HEADER_SPACE)
                c = _cluster().Clusterer.load(f, self.settings)
        except Exception:  # truncated, unreadable, written by other code: rebuild
            return None
        if earliest is not None and not _covers(c, earliest):
            return None
        self.restored += 1
        return c

    def _fresh(self, store: Store, earliest: datetime) -> Clusterer:
        c = _cluster().Clusterer(self.settings, first_story_id=store.next_story_id())
        since = earliest - timedelta(hours=self.settings.window_hours)
        known = store.clustered_since(since)  # streamed: the window may be big
        while chunk := list(islice(known, 5_000)):
            rows = _packed_rows(chunk, self.settings.summary_tokens, self.settings.summary_weight)
            c.add_many(_items(rows), [k.story_id for k in chunk])
        for a, b in store.story_blocks():
            c.block(a, b)
        c.merged_into.clear()
        return c

    def run(
        self,
        store: Store,
        now: datetime,
        batch: int = 10_000,
        apply: Apply | None = None,
        save_ahead: bool = False,
        prefetch: Prefetch | None = None,
        on_first_batch: Callable[[], None] | None = None,
    ) -> ClusterSummary:
        """Place every entry without a story, ``batch`` at a time, in clustering order (the
        queue's ids are read once, then each batch's entries by id). With ``apply`` (a round's
        parsing process, see pipeline.Offload), a batch's stories are written there while the
        next batch is placed here; a write it cannot do (its process died) is done here. With
        ``prefetch`` (the same process), the next batch is read there, and its features
        computed, while this one is placed; a batch it cannot give, or not within
        PREFETCH_WAIT_S, is read here.
        ``on_first_batch`` is called once the first batch is read and the second asked for:
        the round gives that process its other work then (behind the index, the first prefetch
        kept this one waiting 1.5 s in the bench's 1000-feed cold round).
        ``save_ahead``: ``save`` comes next (a one-shot round); the snapshot's body is written
        while the last write is in flight."""
        started = time.perf_counter()
        if not store.lead_clustering():
            self.clusterer = None  # when this process leads again, it starts from the store
            return ClusterSummary(deferred=True)
        if store.lead_term != self.term:  # others may have clustered since we last led
            self.clusterer, self.term = None, store.lead_term
        if self._preloaded is not None:
            if store.cluster_fingerprint() != self._preloaded:  # others placed meanwhile
                self.clusterer = None
            self._preloaded = None
        total = merges = conflicts = 0
        touched = _IdBits()  # the stories the writes created or grew, as they are now
        # the write in flight: (its future, its arguments, entries, merges)
        writing: tuple[Future | None, tuple, int, int] | None = None
        # placed batches not sent yet: their rows and merges, in order, and their entries
        out_rows: list = []
        out_merged: list = []
        out_n = 0
        settings = self.settings
        ahead: tuple[Future, int] | None = None  # the next batch's prefetch, and its start
        queue: Sequence[int] = ()  # ids of the entries without a story, in clustering order
        at = 0  # where in ``queue`` the next batch starts
        size = batch  # how many entries the next batch takes from it
        floor = 0  # entries a write waits for, the last one apart (WRITE_FLOOR)
        placed = 0  # entries of ``queue`` placed (in this start of it)
        placing_s = 0.0  # the time their placing took
        written = 0  # and those written

        def start() -> list[Item]:
            """Read the queue anew and its first batch (with a prefetch, ask for the second
            first: the worker prepares it while this process reads the first)."""
            nonlocal queue, at, ahead, size, placed, placing_s, written, floor
            if ahead is not None:
                ahead[0].cancel()
                ahead = None
            queue, at = store.unclustered_ids(), 0
            floor = WRITE_FLOOR * batch if len(queue) >= LONG_QUEUE * batch else 0
            placed, placing_s, written = 0, 0.0, 0
            if prefetch is None:
                size = batch
                return read()
            # (asked after the first was read, the second batch was not ready when the first
            # was placed: 48 ms of waiting in a traced 1000-feed cold round, against 56 ms
            # of reading the first)
            first = min(batch, FIRST_BATCH)
            at, size = first, min(batch, 2 * first)
            ask()
            return here(0, first)

        def read() -> list[Item]:
            """The queue's next batch: the prefetched one, when it was asked for and came; else
            read here (with a prefetch to come, a first batch of FIRST_BATCH: the worker
            prepares the next one meanwhile; each batch after it is twice the one before, up
            to ``batch``). Its entries that left the queue meanwhile (placed or removed by
            another process) are not in it."""
            nonlocal ahead, at, size
            first = at
            at += size
            # The worker prepares a batch in about half the time it takes to place it, so a
            # batch twice the one being placed is ready when that one is placed. The second
            # batch was a full one: placing the first 2,000 took 0.18-0.26 s here, preparing
            # the next 10,000 0.5 s, and the stage gave up on it after PREFETCH_WAIT_S and read
            # it itself (0.4 s lost at the start of the 1000-feed cold round, traced)
            size = min(batch, 2 * size)
            if ahead is not None:
                fut, asked = ahead
                ahead = None
                if asked == first:
                    try:
                        rows = fut.result(timeout=PREFETCH_WAIT_S)
                    except Exception:  # (its process died, could not read, is still busy)
                        rows = None
                    if rows is not None:
                        return _items(rows)
                else:
                    fut.cancel()
            return here(first, at)

        def here(lo: int, hi: int) -> list[Item]:
            """The queue's entries from ``lo`` to ``hi``, read and tokenized here."""
            ids = queue[lo:hi]
            return _items(prefetched(store, ids, settings.summary_tokens, settings.summary_weight))

        def ask() -> None:
            """Ask for the queue's next batch, if any is left."""
            nonlocal ahead
            if prefetch is not None and at < len(queue):
                # (what is left to place: the batch just read, and the rest of the queue)
                rate = placing_s / placed if placed else None
                left = StageLeft(
                    rate * (len(queue) - placed) if rate is not None else None,
                    len(queue) - written - finished(),
                )
                fut = prefetch(
                    queue[at : at + size], settings.summary_tokens, settings.summary_weight, left
                )
                ahead = (fut, at) if fut is not None else None

        def finished() -> int:
            """The rows of the write in flight when it is done already (``written`` counts them
            once it is settled, at the next write): not work left for the worker. Counted as
            left, they made ``outlasts`` refuse every batch after the round's index in the
            bench's 5000-feed cold round, each read here while the worker idled between
            writes."""
            if writing is None or writing[0] is None or not writing[0].done():
                return 0
            return writing[2]

        def settle() -> None:
            """Wait for the write in flight (or do it here, if its process died)."""
            nonlocal writing, total, merges, written
            if writing is not None:
                fut, args, n, m = writing
                writing = None
                try:
                    done = fut.result() if fut is not None else store.apply_clustering(*args)
                except BrokenProcessPool:
                    done = store.apply_clustering(*args)
                # (a story an earlier write touched may have merged into another since)
                touched.discard(gone for gone, _ in args[1])
                touched.add(done)
                total, merges, written = total + n, merges + m, written + n

        def send(last: bool = False) -> None:
            """Send the placed batches not sent yet as one write, once the write in flight is
            done and they are at least ``floor`` entries (or the ``last``); while not, placing
            goes on and they wait for the next call."""
            nonlocal writing, out_rows, out_merged, out_n
            if not out_n or (
                writing is not None and writing[0] is not None and not writing[0].done()
            ):
                return
            if out_n < floor and not last:
                return
            settle()
            args = (out_rows, out_merged, now, self.generation)
            writing = (apply(*args) if apply is not None else None, args, out_n, len(out_merged))
            out_rows, out_merged, out_n = [], [], 0
            if writing[0] is None:
                settle()  # written here, now

        def send_when_free() -> None:
            """``send(last=True)`` between two of the snapshot body's pickles, unless the write
            in flight failed: its error is raised by the ``flush`` after the body, not inside
            the body's writing (which gives up quietly on an OSError)."""
            fut = writing[0] if writing is not None else None
            if fut is not None and fut.done() and (fut.cancelled() or fut.exception()):
                return
            send(last=True)

        def flush() -> None:
            """Everything placed so far, written."""
            settle()
            send(last=True)
            settle()

        # The next batch is read before the last one's write is done: its ids are the queue's
        # next ones (the queue is read at the start, so a batch never meets entries of the
        # batches before it, whether they were written yet or not). One write is in flight at
        # a time, in order. When the writing process is busy (with the write before, or the
        # round's index before it gave way), the batches placed meanwhile wait
        # here and go in one write when it is free, so placing never stops for it:
        # assignments, then merges, in the order they were made, is what the separate writes
        # would have done.
        # The cyclic garbage collector is paused meanwhile: what a batch makes and drops (rows,
        # items, assignments) is acyclic and freed at once, while each collection pass between
        # batches walked the clusterer's millions of long-lived objects (0.35 s of collections
        # in a 50,000-entry round here).
        with gc_paused():
            pending = start()
            gen = store.cluster_generation()
            if on_first_batch is not None:
                on_first_batch()
            while pending or at < len(queue) or writing is not None or out_n:
                try:
                    if not pending and at < len(queue):  # (all of a batch left the queue)
                        pending = read()
                        gen = store.cluster_generation()
                        ask()
                        continue
                    if not pending:
                        if save_ahead and self.unsaved:
                            # the body is written while the last writes are in flight: the
                            # rest of the rows, when a write was in flight still, go as soon
                            # as it is done, between two of the body's pickles (waiting for
                            # it before the body kept the process 0.24 s longer in a traced
                            # cold round of 1000 feeds, and 0.33 s in one of 5000)
                            send(last=True)
                            self._write_ahead(store, between=send_when_free)
                        flush()
                        break
                    c = self.clusterer
                    earliest = pending[0].published
                    if c is None or gen != self.generation or not _covers(c, earliest):
                        flush()  # the rebuild reads the stories, the last batches' included
                        c = self._restore(store, earliest) or self._fresh(store, earliest)
                        self.clusterer, self.generation = c, gen
                    began = time.perf_counter()
                    done = c.add_many(pending)
                    placing_s += time.perf_counter() - began
                    placed += len(pending)
                    out_rows.extend(
                        (eid, c.resolve(sid), score, why) for eid, sid, score, why in done
                    )
                    out_merged.extend((gone, c.resolve(gone)) for gone in c.merged_into)
                    out_n += len(pending)
                    c.merged_into.clear()
                    pending = []
                    if at < len(queue):
                        pending = read()
                        gen = store.cluster_generation()
                        ask()
                    send()
                    self.unsaved = True
                    self._placed += 1
                except ClusterConflictError:  # a correction came in: rebuild, place again
                    writing, self.clusterer = None, None
                    out_rows, out_merged, out_n = [], [], 0
                    conflicts += 1
                    if conflicts > 3:
                        raise
                    pending = start()  # (a prefetch in flight is for another start: dropped)
                    gen = store.cluster_generation()
                except BaseException:
                    self.clusterer = None  # memory and store may disagree now: rebuild next time
                    raise
        return ClusterSummary(total, len(touched), merges, time.perf_counter() - started)
