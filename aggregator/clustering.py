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

One process per store clusters: ``store.lead_clustering()`` says whether it is this one (on
PostgreSQL, where several workers share the store, the holder of an advisory lock; the others
leave their new entries to it, and take over when it goes away).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from .dedup.cluster import Clusterer, ClusterSettings, Item
from .errors import ClusterConflictError
from .models import ClusterItem
from .store.base import Store


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    entries: int = 0
    stories_touched: int = 0
    merges: int = 0
    seconds: float = 0.0
    deferred: bool = False  # another process leads clustering on this store


def to_item(c: ClusterItem) -> Item:
    return Item(
        entry_id=c.entry_id,
        source=str(c.feed_id),
        url=c.url,
        title=c.title,
        summary=c.summary,
        published=c.published,
    )


class ClusteringStage:
    def __init__(self, settings: ClusterSettings | None = None):
        self.settings = settings or ClusterSettings()
        self.clusterer: Clusterer | None = None
        self.generation: int | None = None
        self.term: int | None = None  # the store's lead_term the clusterer was built in

    def _fresh(self, store: Store, earliest: datetime) -> Clusterer:
        c = Clusterer(self.settings, first_story_id=store.next_story_id())
        since = earliest - timedelta(hours=self.settings.window_hours)
        known = store.clustered_since(since)  # streamed: the window may be big
        while chunk := list(islice(known, 5_000)):
            c.add_many(map(to_item, chunk), [k.story_id for k in chunk])
        for a, b in store.story_blocks():
            c.block(a, b)
        c.merged_into.clear()
        return c

    def run(self, store: Store, now: datetime, batch: int = 10_000) -> ClusterSummary:
        started = time.perf_counter()
        if not store.lead_clustering():
            self.clusterer = None  # when this process leads again, it starts from the store
            return ClusterSummary(deferred=True)
        if store.lead_term != self.term:  # others may have clustered since we last led
            self.clusterer, self.term = None, store.lead_term
        total = touched = merges = conflicts = 0
        while True:
            pending = store.unclustered(limit=batch)
            if not pending:
                break
            gen = store.cluster_generation()
            c = self.clusterer
            if (
                c is None
                or gen != self.generation
                or pending[0].published.timestamp() < c._horizon - c._window
            ):
                c = self.clusterer = self._fresh(store, pending[0].published)
                self.generation = gen
            try:
                placed = c.add_many(map(to_item, pending))
                rows = [(eid, c.resolve(sid), score, reason) for eid, sid, score, reason in placed]
                merged = [(gone, c.resolve(gone)) for gone in c.merged_into]
                c.merged_into.clear()
                touched += len(store.apply_clustering(rows, merged, now, self.generation))
            except ClusterConflictError:
                self.clusterer = None
                conflicts += 1
                if conflicts > 3:
                    raise
                continue
            except BaseException:
                self.clusterer = None  # memory and store may disagree now: rebuild next time
                raise
            total += len(pending)
            merges += len(merged)
            if len(pending) < batch:
                break
        return ClusterSummary(total, touched, merges, time.perf_counter() - started)
