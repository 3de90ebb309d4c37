"""The clustering stage over a real store, on both backends: a batch's stories are written on a
thread while the next batch is placed, and that changes nothing in what ends up stored."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import signal
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.clustering import ClusteringStage
from aggregator.config import Settings
from aggregator.errors import ClusterConflictError
from aggregator.pipeline import Offload
from aggregator.store import open_store

from .conftest import collections_during, make_entry, store_entries

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
NOW = T + timedelta(days=1)
EVENTS, OUTLETS = 25, 4


def word(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest()
    return "".join(chr(97 + int(c, 16)) for c in h[:8])


def headline(event: int, outlet: int) -> str:
    """Five of the event's six words (each outlet leaves out another) and two of the outlet's."""
    keys = [word(f"event {event} {k}") for k in range(6)]
    del keys[outlet % 6]
    return " ".join([*keys, word(f"outlet {outlet} {event} a"), word(f"outlet {outlet} {event} b")])


def tell(store, events: range) -> None:
    """Each outlet (its feed, in the order ``fill`` added them) tells ``events``: five of the
    event's six words and two of its own, 37 minutes apart."""
    for o, feed in enumerate(store.list_feeds()):
        entries = [
            make_entry(
                feed.id,
                e,
                T + timedelta(minutes=37 * e + 5 * o),
                title=headline(e, o),
                url=f"https://outlet{o}.example/{e}",
            )
            for e in events
        ]
        store_entries(store, feed, entries, T)


def fill(target: str):
    """A store holding EVENTS x OUTLETS entries, none of them in a story yet."""
    store = open_store(target)
    for o in range(OUTLETS):
        store.add_feed(f"https://outlet{o}.example/feed", None, T)
    tell(store, range(EVENTS))
    return store


def stories(store) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for item in store.clustered_since(T - timedelta(days=1)):
        groups.setdefault(item.story_id, set()).add(item.url)
    return {frozenset(g) for g in groups.values()}


def expected() -> set[frozenset[str]]:
    return {
        frozenset(f"https://outlet{o}.example/{e}" for o in range(OUTLETS)) for e in range(EVENTS)
    }


@pytest.fixture
def offload(db_target):
    off = Offload(db_target, Settings(), 1)
    yield off
    off.close()


@pytest.mark.parametrize("where", ["here", "in a worker"])
def test_small_batches_store_the_stories_one_batch_stores(db_target, tmp_path, where, request):
    one = fill(str(tmp_path / "one.sqlite"))
    summary = ClusteringStage().run(one, NOW)
    assert summary.entries == EVENTS * OUTLETS
    assert stories(one) == expected()  # (the headlines are made to be told apart)
    one.close()

    store = fill(db_target)
    apply = request.getfixturevalue("offload").apply_clustering if where != "here" else None
    # 15 batches; with a worker, their stories written there while the next ones are placed
    summary = ClusteringStage().run(store, NOW, batch=7, apply=apply)
    assert summary.entries == EVENTS * OUTLETS and summary.merges == 0
    # each story once, though its entries came in two batches' writes
    assert summary.stories_touched == EVENTS
    assert store.unclustered() == []
    assert stories(store) == expected()
    assert store.story_count() == EVENTS
    store.close()


def test_the_same_entries_make_the_same_stories_whatever_order_their_feeds_came_in(tmp_path):
    """Outlets that tell each event at the same minute, their feeds stored in one order in one
    store and in the other order in another: each entry gets the same story, the same score
    and the same reason in both (the first placed starts its story, the others join it)."""

    def placed(name: str, order: list[int]) -> dict:
        store = open_store(str(tmp_path / name))
        feeds = [store.add_feed(f"https://outlet{o}.example/feed", None, T) for o in range(3)]
        for o in order:
            entries = [
                make_entry(feeds[o].id, e, T + timedelta(minutes=37 * e), title=headline(e, o))
                for e in range(6)
            ]
            store_entries(store, feeds[o], entries, T)
        ClusteringStage().run(store, NOW)
        got = {
            (r[0], r[1]): r[2:]
            for r in store.db.execute(
                "SELECT feed_id, key, story_id, join_reason, round(join_score, 9) FROM entries"
            )
        }
        store.close()
        return got

    forward, backward = placed("a.sqlite", [0, 1, 2]), placed("b.sqlite", [2, 1, 0])
    assert len(forward) == 18 and len({v[0] for v in forward.values()}) == 6
    assert backward == forward
    # (each story was started by the first outlet's entry, in both)
    assert {k for k, v in forward.items() if v[1] == "new"} == {(1, f"g:{e}") for e in range(6)}


def test_the_stage_places_its_batches_without_running_the_cyclic_collector(tmp_path):
    # between batches, a collection pass walked the clusterer's long-lived objects (millions
    # of them in a big window); what a batch drops is acyclic and freed anyway
    store = fill(str(tmp_path / "gc.sqlite"))
    with collections_during() as during:
        summary = ClusteringStage().run(store, NOW, batch=7)  # 15 batches, 15 store reads
    assert summary.entries == EVENTS * OUTLETS and stories(store) == expected()
    # (at most the one the allocations made meanwhile trigger once the pause is over)
    assert len(during) <= 1, during
    store.close()


def test_the_stage_leaves_its_clusterer_in_the_collectors_oldest_generation(tmp_path):
    # the objects made during the pause were never collected: left in the youngest generation,
    # the first collection after the stage walked them all (67-75 ms at the end of the bench's
    # 1000-feed cold round), and each older generation's first one again
    store = fill(str(tmp_path / "gc.sqlite"))
    stage = ClusteringStage()
    gc.collect()
    summary = stage.run(store, NOW, batch=7)
    young = {id(o) for o in gc.get_objects(0) + gc.get_objects(1)}
    old = {id(o) for o in gc.get_objects(2)}
    held = [st for st in stage.clusterer.stories.values() if gc.is_tracked(st)]
    assert held  # (else this test would look at nothing)
    assert all(id(st) in old and id(st) not in young for st in held)
    assert gc.get_freeze_count() == 0  # nothing left frozen
    assert summary.entries == EVENTS * OUTLETS and stories(store) == expected()
    store.close()


def test_a_preloaded_clusterer_is_used_only_if_the_stories_did_not_change_meanwhile(tmp_path):
    """``preload`` reads the snapshot ahead of ``run`` (a round's worker, while the round
    fetches). If another process placed entries in between, the preloaded clusterer lacks
    them: ``run`` drops it and reads or rebuilds from the store instead."""
    store = fill(str(tmp_path / "pre.sqlite"))
    first = ClusteringStage()
    first.run(store, NOW)
    assert first.save(store)
    # nothing happened in between: run places the new entries with the preloaded clusterer
    quiet = ClusteringStage()
    assert quiet.preload(store) and quiet.restored == 1
    kept = quiet.clusterer
    tell(store, range(EVENTS, EVENTS + 3))
    assert quiet.run(store, NOW).entries == 3 * OUTLETS
    assert quiet.clusterer is kept and quiet.restored == 1
    assert quiet.save(store)
    # another process places entries between the preload and the run
    late = ClusteringStage()
    assert late.preload(store)
    stale = late.clusterer
    tell(store, range(EVENTS + 3, EVENTS + 6))
    ClusteringStage().run(store, NOW)  # (the other process; it leaves no snapshot)
    tell(store, range(EVENTS + 6, EVENTS + 9))
    assert late.run(store, NOW).entries == 3 * OUTLETS
    assert late.clusterer is not stale  # rebuilt: the snapshot no longer fits the store
    assert stories(store) == {
        frozenset(f"https://outlet{o}.example/{e}" for o in range(OUTLETS))
        for e in range(EVENTS + 9)
    }
    store.close()


def test_entries_placed_while_the_snapshot_is_read_make_run_rebuild(tmp_path, monkeypatch):
    """What ``run`` checks the preloaded clusterer against is the fingerprint the snapshot's
    header matched before it was read: entries another process places during the read are
    not in the snapshot, and ``run`` rebuilds. (Taken again after the read, the fingerprint
    took them in, and ``run`` went on without them.)"""
    from aggregator import clustering

    store = fill(str(tmp_path / "race.sqlite"))
    first = ClusteringStage()
    first.run(store, NOW)
    assert first.save(store)
    tell(store, range(EVENTS, EVENTS + 3))
    module = clustering._cluster
    load = module().Clusterer.load

    def load_while_another_places(f, settings):
        monkeypatch.setattr(clustering, "_cluster", module)
        ClusteringStage().run(store, NOW)  # (the other process, during the read)
        return load(f, settings)

    # (the compiled Clusterer's attributes cannot be set: the module the stage reads it from
    # is this stand-in until the read)
    reading = SimpleNamespace(
        source_digest=module().source_digest,
        Clusterer=SimpleNamespace(load=load_while_another_places),
    )
    monkeypatch.setattr(clustering, "_cluster", lambda: reading)
    late = ClusteringStage()
    assert late.preload(store)
    monkeypatch.undo()
    stale = late.clusterer
    tell(store, range(EVENTS + 3, EVENTS + 6))
    assert late.run(store, NOW).entries == 3 * OUTLETS
    assert late.clusterer is not stale  # rebuilt: the snapshot lacks the other's placements
    assert stories(store) == {
        frozenset(f"https://outlet{o}.example/{e}" for o in range(OUTLETS))
        for e in range(EVENTS + 6)
    }
    store.close()


def _count_reads(store, monkeypatch) -> list:
    """The batches ``store`` reads in this process (ClusteringStage's reads), as a list."""
    reads, unclustered = [], store.unclustered_items
    monkeypatch.setattr(
        store, "unclustered_items", lambda *a, **k: reads.append(a) or unclustered(*a, **k)
    )
    return reads


def test_batches_read_ahead_in_the_worker_store_the_stories_read_here(
    db_target, offload, monkeypatch
):
    """With ``prefetch``, the worker reads the next batch and computes its features while this
    process places the one before: this process reads only the first, and places the rest from
    their features alone (the items it gets have no title or summary). (The writes are done
    here: a worker busy with one is not asked for a batch, see the test after next.)"""
    from aggregator import clustering

    monkeypatch.setattr(clustering, "PREFETCH_WAIT_S", 60.0)  # (the worker starts meanwhile)
    store = fill(db_target)
    reads, asked, got = _count_reads(store, monkeypatch), [], []

    def prefetch(ids, tokens, weight, left):  # (``left`` not weighed: see the balance test)
        asked.append(list(ids))
        fut = offload.prefetch(ids, tokens, weight)
        fut.add_done_callback(lambda f: got.append(len(f.result())))
        return fut

    summary = ClusteringStage().run(store, NOW, batch=7, prefetch=prefetch)
    assert len(reads) == 1  # the first batch; the other 14 came from the worker
    assert len(asked) == 14 and sorted(got) == [2] + [7] * 13
    assert summary.entries == EVENTS * OUTLETS and summary.merges == 0
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


def test_with_a_prefetch_the_first_batch_is_a_short_one(db_target, offload, monkeypatch):
    """The first batch is read and tokenized here while the worker prepares the next: it is
    FIRST_BATCH entries, so that the worker's share is most of the round's; each batch after
    it is twice the one before (ready when that one is placed), up to the batch size."""
    from aggregator import clustering

    monkeypatch.setattr(clustering, "FIRST_BATCH", 3)
    monkeypatch.setattr(clustering, "PREFETCH_WAIT_S", 60.0)
    store = fill(db_target)
    reads, asked, got = _count_reads(store, monkeypatch), [], []

    def prefetch(ids, tokens, weight, left):  # (``left`` not weighed: see the balance test)
        asked.append(len(ids))
        fut = offload.prefetch(ids, tokens, weight)
        fut.add_done_callback(lambda f: got.append(len(f.result())))
        return fut

    summary = ClusteringStage().run(store, NOW, batch=10, prefetch=prefetch)
    assert [len(r[0]) for r in reads] == [3]  # here: 3 entries; in the worker the other 97
    assert asked == [6] + [10] * 9 + [1]
    assert sorted(got) == sorted(asked)
    assert summary.entries == EVENTS * OUTLETS
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


def test_while_the_worker_is_busy_the_stage_reads_its_batches_itself(
    db_target, offload, monkeypatch
):
    """A batch asked of the worker while it has work (the round's full-text index, a write)
    would wait behind that: the stage reads it here instead, and asks the worker again once
    the worker is free."""
    from concurrent.futures import Future

    from aggregator import clustering

    monkeypatch.setattr(clustering, "PREFETCH_WAIT_S", 60.0)
    store = fill(db_target)
    reads, answers = _count_reads(store, monkeypatch), []
    work = Future()  # (the worker's task, at work)
    offload.tasks.append(work)

    def prefetch(ids, tokens, weight, left):  # (``left`` not weighed: see the balance test)
        fut = offload.prefetch(ids, tokens, weight)
        answers.append(fut)
        if len(answers) == 7:  # that task is done now: the worker reads the rest
            work.set_result(True)
        return fut

    summary = ClusteringStage().run(store, NOW, batch=7, prefetch=prefetch)
    assert len(answers) == 14
    assert answers[:7] == [None] * 7 and None not in answers[7:]
    assert len(reads) == 8  # the first batch and the 7 asked while the worker was busy
    assert summary.entries == EVENTS * OUTLETS
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


def test_the_stage_tells_a_prefetch_what_it_has_left(db_target, offload, monkeypatch):
    """Each batch asked for comes with what the stage has left (StageLeft): its placing
    seconds, at the time its placing took so far (unknown before it placed any), and the
    entries whose stories are not written yet."""
    from aggregator import clustering

    monkeypatch.setattr(clustering, "PREFETCH_WAIT_S", 60.0)
    store = fill(db_target)
    lefts = []

    def prefetch(ids, tokens, weight, left):
        lefts.append(left)
        return offload.prefetch(ids, tokens, weight)

    ClusteringStage().run(store, NOW, batch=7, prefetch=prefetch)
    assert len(lefts) == 14
    assert lefts[0].seconds is None and lefts[0].unwritten == EVENTS * OUTLETS
    assert all(left.seconds > 0 for left in lefts[1:])
    # (without ``apply`` each batch is written here once placed: fewer are left at each ask)
    unwritten = [left.unwritten for left in lefts]
    assert unwritten == sorted(unwritten, reverse=True) and unwritten[-1] < EVENTS * OUTLETS
    store.close()


def test_a_store_where_no_entry_has_a_story_gives_an_empty_window_without_a_scan(tmp_path):
    """A fresh clusterer reads the window's entries that have stories; in a store where none
    has one yet (a first round), it learns so from the index of clustered entries instead of
    reading every entry of the window. (SQLite's VM steps, counted by a progress handler.)"""
    store = fill(str(tmp_path / "fresh.sqlite"))
    steps: list[int] = []
    store.db.set_progress_handler(lambda: steps.append(1), 50)
    try:
        assert list(store.clustered_since(T - timedelta(days=30))) == []
    finally:
        store.db.set_progress_handler(None, 50)
    assert len(steps) <= 1
    ClusteringStage().run(store, NOW)  # and once they have stories, the window holds them
    assert len(list(store.clustered_since(T - timedelta(days=30)))) == EVENTS * OUTLETS
    store.close()


def test_a_batch_the_worker_cannot_give_is_read_here(db_target, monkeypatch):
    """A prefetch that cannot be made (None: the workers are gone), that fails (its worker
    died, its read failed) or that does not come in time costs nothing: the stage reads that
    batch itself."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from aggregator import clustering

    monkeypatch.setattr(clustering, "PREFETCH_WAIT_S", 0.05)
    store = fill(db_target)
    reads, asked = _count_reads(store, monkeypatch), []

    def prefetch(ids, tokens, weight, left):  # (``left`` not weighed: see the balance test)
        asked.append(list(ids))
        if len(asked) % 3 == 1:
            return None
        fut = Future()  # (one that never comes: still busy with a long task)
        if len(asked) % 3 == 2:
            fut.set_exception(BrokenProcessPool("gone"))
        return fut

    summary = ClusteringStage().run(store, NOW, batch=7, prefetch=prefetch)
    assert len(asked) == 14 and len(reads) == 15
    assert summary.entries == EVENTS * OUTLETS
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


@pytest.mark.parametrize("ahead", [False, True], ids=["read here", "read ahead"])
def test_a_correction_while_a_batch_is_written_is_placed_again(db_target, offload, ahead):
    """The generation moves (another process corrected a story) just before the second write
    (the batches placed while the first was in flight): the worker refuses that write, the
    stage rebuilds from the store and places the rest again."""
    store = fill(db_target)
    futures = []

    def apply(rows, merged, now, generation):
        if len(futures) == 1:
            with store._write() as db:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('cluster_generation', '7')"
                    " ON CONFLICT (key) DO UPDATE SET value = '7'"
                )
        futures.append(offload.apply_clustering(rows, merged, now, generation))
        return futures[-1]

    prefetch = offload.prefetch if ahead else None
    summary = ClusteringStage().run(store, NOW, batch=7, apply=apply, prefetch=prefetch)
    assert [i for i, f in enumerate(futures) if f.exception() is not None] == [1]
    assert isinstance(futures[1].exception(), ClusterConflictError)
    assert summary.entries == EVENTS * OUTLETS  # each entry counted once, refused ones not
    assert store.unclustered() == []
    assert stories(store) == expected()
    store.close()


def test_batches_placed_while_the_worker_is_busy_go_in_one_write(db_target, offload):
    """The worker is busy (it indexes the round's entries first, in a real round): placing
    does not wait for it, and the batches placed meanwhile are written together once it is
    free, with the stories separate writes would have stored."""
    store = fill(db_target)
    calls = []

    def apply(rows, merged, now, generation):
        if not calls:
            offload.pool.submit(time.sleep, 1.0)  # the first write waits behind this
        calls.append(len(rows))
        return offload.apply_clustering(rows, merged, now, generation)

    summary = ClusteringStage().run(store, NOW, batch=7, apply=apply)
    assert calls == [7, EVENTS * OUTLETS - 7]  # the first batch; the other 14 at once
    assert summary.entries == EVENTS * OUTLETS
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


@pytest.mark.parametrize("where", ["here", "in a worker"])
def test_a_long_queue_is_written_a_few_batches_at_a_time(db_target, where, request, monkeypatch):
    """A queue of at least LONG_QUEUE batches: each write but the last waits for WRITE_FLOOR
    batches' entries (a write's cost per entry falls with its size), and the stories are
    those of one write per batch. (A shorter queue writes each batch alone: see the test
    above, whose first write is its first batch.)"""
    from aggregator import clustering

    store = fill(db_target)
    calls = []
    if where == "here":
        write = store.apply_clustering

        def apply_here(rows, merged, now, generation=None):
            calls.append(len(rows))
            return write(rows, merged, now, generation)

        monkeypatch.setattr(store, "apply_clustering", apply_here)
        apply = None
    else:
        offload = request.getfixturevalue("offload")

        def apply(rows, merged, now, generation):
            calls.append(len(rows))
            return offload.apply_clustering(rows, merged, now, generation)

    batch = 5  # 21 batches: a long queue
    assert clustering.LONG_QUEUE * batch <= EVENTS * OUTLETS
    summary = ClusteringStage().run(store, NOW, batch=batch, apply=apply)
    floor = clustering.WRITE_FLOOR * batch
    assert sum(calls) == EVENTS * OUTLETS and len(calls) >= 2
    assert all(n >= floor for n in calls[:-1]), calls
    assert summary.entries == EVENTS * OUTLETS and summary.stories_touched == EVENTS
    assert store.unclustered() == [] and stories(store) == expected()
    store.close()


def test_a_worker_that_dies_mid_stage_costs_no_story(db_target, offload, caplog):
    store = fill(db_target)
    calls = []

    def apply(rows, merged, now, generation):
        calls.append(len(rows))
        if len(calls) != 2:
            return offload.apply_clustering(rows, merged, now, generation)
        offload.pool.submit(time.sleep, 30)  # the worker is busy: the write waits behind it
        fut = offload.apply_clustering(rows, merged, now, generation)
        for pid in offload.pids():
            os.kill(pid, signal.SIGKILL)  # with the second write in flight
        return fut

    caplog.set_level(logging.WARNING, logger="aggregator")
    summary = ClusteringStage().run(store, NOW, batch=7, apply=apply)
    # (the pool marks itself lost from its own thread, after it woke whoever waited on the
    # dead write: the stage may have written it here and gone on before)
    deadline = time.monotonic() + 10
    while not offload.broken and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 2 and offload.broken
    assert "a parsing process died" in caplog.text
    assert summary.entries == EVENTS * OUTLETS
    assert store.unclustered() == []
    assert stories(store) == expected()
    store.close()


@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 5000), max_size=30))))
def test_the_stories_touched_are_counted_as_a_set_would(steps):
    from aggregator.clustering import _IdBits

    bits, ids = _IdBits(), set()
    for add, some in steps:
        if add:
            bits.add(some)
            ids.update(some)
        else:
            bits.discard(some)
            ids.difference_update(some)
        assert len(bits) == len(ids)


def test_a_snapshot_written_ahead_is_finished_by_save_or_written_again(tmp_path):
    """A one-shot round (``save_ahead``) writes the snapshot's body while its last write is in
    flight; ``save`` then only adds the header (the store's fingerprint, known after that
    write). If entries were placed in between, the body is stale: ``save`` writes it all again.
    Either way the next process reads a snapshot that fits, and no temporary file is left."""
    db = tmp_path / "ahead.sqlite"
    store = fill(str(db))
    off = Offload(str(db), Settings(), 1)  # the round's worker: the writes are made there
    stage = ClusteringStage()
    stage.run(store, NOW, batch=7, apply=off.apply_clustering, save_ahead=True)
    assert [p.name for p in tmp_path.glob("*.tmp")] == [f"ahead.sqlite.clusterer.{os.getpid()}.tmp"]
    assert stage.save(store)
    assert list(tmp_path.glob("*.tmp")) == []
    again = ClusteringStage()
    assert again.preload(store) and again.restored == 1
    assert again.clusterer.stories.keys() == stage.clusterer.stories.keys()

    stage.run(store, NOW, apply=off.apply_clustering, save_ahead=True)  # nothing to place
    assert list(tmp_path.glob("*.tmp")) == []  # (nothing written ahead)
    tell(store, range(EVENTS, EVENTS + 3))
    stage.run(store, NOW, apply=off.apply_clustering, save_ahead=True)
    assert len(list(tmp_path.glob("*.tmp"))) == 1
    tell(store, range(EVENTS + 3, EVENTS + 6))
    stage.run(store, NOW)  # placed after that body was written
    off.close()
    assert stage.save(store)
    assert list(tmp_path.glob("*.tmp")) == []
    late = ClusteringStage()
    assert late.preload(store)  # it fits the store as it is now: written whole again
    assert late.clusterer.stories.keys() == stage.clusterer.stories.keys()
    assert len(late.clusterer.stories) == EVENTS + 6
    store.close()


def _body_begun(folder) -> bool:
    """Whether a snapshot body is being written (or was, and not yet finished by ``save``)
    in ``folder``: its temporary file is there."""
    return bool(list(folder.glob("*.tmp")))


def _written_now(store, *args):
    """A done future of ``store.apply_clustering(*args)``: a write the worker did at once."""
    from concurrent.futures import Future

    fut: Future = Future()
    fut.set_result(store.apply_clustering(*args))
    return fut


def _saved_whole(stage: ClusteringStage, store) -> None:
    """The stage's snapshot is finished, the stories are all stored, and another process
    reads the snapshot back; the store is closed."""
    assert stage.save(store)
    assert stories(store) == expected()
    again = ClusteringStage()
    assert again.preload(store)
    store.close()


def test_the_snapshot_body_is_written_while_the_last_write_is_in_flight(tmp_path):
    """When the last batch's write is already in flight as placing ends, the body is written
    at once, not after that write (which then finishes meanwhile). Here that write waits for
    the body to appear: had the stage waited for the write first, it would wait in vain."""
    import threading
    from concurrent.futures import Future

    db = tmp_path / "inflight.sqlite"
    store = fill(str(db))
    last = store.unclustered_ids()[-1]
    waited: list[bool] = []

    def apply(rows, merged, now, generation):
        fut: Future = Future()
        final = any(r[0] == last for r in rows)  # the last batch's, sent once it is placed

        def write() -> None:
            if final:
                deadline = time.monotonic() + 10
                while not _body_begun(tmp_path) and time.monotonic() < deadline:
                    time.sleep(0.01)
                waited.append(_body_begun(tmp_path))
            writer = open_store(str(db))
            try:
                fut.set_result(writer.apply_clustering(rows, merged, now, generation))
            finally:
                writer.close()

        if final:
            threading.Thread(target=write).start()
        else:  # the others are done before the next batch is placed
            write()
        return fut

    stage = ClusteringStage()
    stage.run(store, NOW, batch=7, apply=apply, save_ahead=True)
    assert waited == [True]  # the body came while the last write waited for it
    _saved_whole(stage, store)


def test_rows_waiting_at_the_end_go_as_soon_as_the_write_before_them_is_done(tmp_path):
    """Placing ends with a write in flight and rows placed since waiting for it: the body is
    written at once, and the waiting rows are sent between two of its pickles, as soon as the
    write before them is done, not after the whole body (nor is the body held up by that
    write). Each write here is done only once the body was begun (its future does the write
    when asked, the temporary file being there); one asked for before would have had to be
    forced, and is recorded."""
    from concurrent.futures import Future

    db = tmp_path / "paced.sqlite"
    store = fill(str(db))
    forced: list[int] = []  # writes whose result was wanted before the body was begun
    during_body: list[bool] = []  # for each write sent: whether the body was being written
    stage = ClusteringStage()

    class Lazy(Future):
        def __init__(self, args) -> None:
            super().__init__()
            self.args = args

        def _write(self) -> None:
            writer = open_store(str(db))
            try:
                self.set_result(writer.apply_clustering(*self.args))
            finally:
                writer.close()

        def done(self) -> bool:
            if not super().done() and _body_begun(tmp_path):
                self._write()
            return super().done()

        def result(self, timeout=None):
            if not self.done():
                forced.append(len(self.args[0]))
                self._write()
            return super().result(timeout)

    def apply(rows, merged, now, generation):
        during_body.append(_body_begun(tmp_path) and stage._ahead is None)
        return Lazy((rows, merged, now, generation))

    stage.run(store, NOW, batch=7, apply=apply, save_ahead=True)
    assert forced == []
    # the first write goes at once; the rows placed while it was in flight wait for it, and
    # go in one write while the body is written
    assert during_body == [False, True]
    _saved_whole(stage, store)


def test_a_write_that_failed_while_the_body_was_written_is_not_lost(tmp_path):
    """The write in flight as placing ends fails (an OSError, which the body's writing would
    take as its own and give up on quietly): the stage raises it, rather than send the rows
    after it and return as if that write's rows were stored."""
    from concurrent.futures import Future

    db = tmp_path / "failed.sqlite"
    store = fill(str(db))
    sent: list[int] = []

    class FailsOnceBegun(Future):
        def done(self) -> bool:
            if not super().done() and _body_begun(tmp_path):
                self.set_exception(OSError("the worker's disk is gone"))
            return super().done()

        def result(self, timeout=None):  # (wanted before the body: it would never come)
            assert self.done(), "a write's result was wanted before the body was begun"
            return super().result(timeout)

    def apply(rows, merged, now, generation):
        sent.append(len(rows))
        if len(sent) == 1:  # the first write: the rest wait behind it
            return FailsOnceBegun()
        return _written_now(store, rows, merged, now, generation)  # (any later one)

    stage = ClusteringStage()
    with pytest.raises(OSError, match="disk is gone"):
        stage.run(store, NOW, batch=7, apply=apply, save_ahead=True)
    assert sent == [7]  # nothing was sent behind the failed write
    assert len(store.unclustered_ids()) == EVENTS * OUTLETS  # and nothing claims to be stored
    store.close()


def test_what_the_stage_says_is_left_to_write_leaves_out_writes_done(tmp_path):
    """Each batch asked of the worker comes with what the stage has left (``StageLeft``), which
    the round weighs against the worker's own work (Offload.outlasts). A write the worker has
    done is no work left, though the stage counts it as written only at its next write."""
    store = fill(str(tmp_path / "left.sqlite"))
    total = len(store.unclustered_ids())
    applied = 0  # rows written so far (each write is done as it is sent)
    told: list[tuple[int, int]] = []  # (rows left to write as told, as they are)

    def apply(rows, merged, now, generation):
        nonlocal applied
        fut = _written_now(store, rows, merged, now, generation)
        applied += len(rows)
        return fut

    def prefetch(ids, summary_tokens, summary_weight, left):
        told.append((left.unwritten, total - applied))
        return None  # (refused: the stage reads the batch itself)

    ClusteringStage().run(store, NOW, batch=7, apply=apply, prefetch=prefetch)
    assert len(told) > 3 and any(t[1] < total for t in told)
    assert [t[0] for t in told] == [t[1] for t in told]
    assert stories(store) == expected()
    store.close()


def test_a_snapshot_of_the_previous_format_is_not_read(tmp_path):
    store = fill(str(tmp_path / "old.sqlite"))
    stage = ClusteringStage()
    stage.run(store, NOW)
    path = store.cluster_snapshot_path()
    header = (2, *stage._header(store)[1:])  # format 2: the body right after the header
    with path.open("wb") as f:
        pickle.dump(header, f)
        stage.clusterer.dump(f)
    assert not ClusteringStage().preload(store)
    store.close()
