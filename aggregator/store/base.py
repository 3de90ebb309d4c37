"""The store protocol: what the pipeline and the API need from any backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Protocol

import msgspec

from ..models import (
    ClusterItem,
    Entry,
    Feed,
    FetchRequest,
    FetchResult,
    ParsedFeed,
    SearchHit,
    StoredEntry,
)


class StoreStats(msgspec.Struct, frozen=True):
    feeds: int
    entries: int
    size_bytes: int


class WriteResult(msgspec.Struct, frozen=True):
    new: int
    updated: int


class Store(Protocol):
    """Implemented by SQLiteStore and PostgresStore (both through sql.SQLStore)."""

    shared: bool  # several worker processes may use this store at once (feeds are leased)

    @property
    def target(self) -> str | None:
        """What ``open_store`` takes to open this store again in another process (None: it
        cannot be, e.g. an in-memory database)."""
        ...

    def close(self) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """A context for several writes: one transaction where that is cheaper (SQLite: each
        write a savepoint of it, undone alone when it fails), each its own elsewhere."""
        ...

    # feeds
    def add_feed(self, url: str, title: str | None, now: datetime) -> Feed: ...
    def get_feed(self, ref: str | int) -> Feed: ...
    def list_feeds(self) -> list[Feed]: ...
    def remove_feed(self, feed_id: int) -> None: ...
    def set_feed_title(self, feed_id: int, title: str | None) -> None: ...
    def enable_feed(self, feed_id: int) -> None: ...
    def fetch_requests(
        self, feed_ids: Sequence[int] | None = None, due_before: datetime | None = None
    ) -> list[FetchRequest]: ...
    def feed_counts(self, now: datetime) -> dict[str, int]: ...

    # leases (used when ``shared``)
    def claim_feeds(
        self,
        worker: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        after_id: int = 0,
        feed_ids: Sequence[int] | None = None,
        due_only: bool = True,
    ) -> list[FetchRequest]: ...
    def release_leases(self, worker: str) -> int: ...

    # one feed's result of a round, in one transaction; then its next check
    def write_feed_result(
        self,
        fetch: FetchResult,
        parsed: ParsedFeed | None,
        entries: Iterable[Entry],
        error: str | None,
        now: datetime,
    ) -> WriteResult: ...
    def schedule_state(self, feed_id: int, now: datetime): ...
    def set_schedule(
        self,
        feed_id: int,
        next_check_at: datetime,
        reason: str,
        disabled_reason: str | None,
        now: datetime,
    ) -> None: ...

    def ensure_connected(self) -> bool: ...
    def defer_indexes(self) -> bool:
        """Drop the indexes a first load builds faster at its end, when the store holds no
        entry yet; whether it did. ``restore_indexes`` builds them again."""
        ...

    def restore_indexes(self) -> None:
        """Build the indexes ``defer_indexes`` dropped (if a process that deferred them died
        first, the next round does)."""
        ...

    # clustering (see sql_stories.StoryStoreMixin for the story queries and corrections)
    lead_term: int

    def lead_clustering(self) -> bool: ...
    def unclustered(self) -> list[ClusterItem]: ...
    def unclustered_ids(self) -> Sequence[int]: ...
    def unclustered_items(self, ids: Sequence[int]) -> list[ClusterItem]: ...
    def clustered_since(self, since: datetime, chunk: int = 5_000) -> Iterator[ClusterItem]: ...
    def story_blocks(self) -> list[tuple[int, int]]: ...
    def next_story_id(self) -> int: ...
    def cluster_generation(self) -> int: ...
    def cluster_fingerprint(self) -> tuple:
        """Changes whenever the stored stories change: entries placed, merged, moved,
        removed, or a correction made (``cluster_generation``)."""
        ...

    def cluster_snapshot_path(self) -> Path | None:
        """Where the clustering stage may keep a snapshot of its clusterer between processes
        (a cache: never needed, checked against ``cluster_fingerprint``), or None."""
        ...

    def apply_clustering(
        self,
        assignments: Iterable[tuple[int, int, float, str]],
        merges: Sequence[tuple[int, int]],
        now: datetime,
        generation: int | None = None,
    ) -> set[int]: ...

    # search and queries
    def index_pending(
        self,
        pause: Callable[[], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int | None: ...
    def search(
        self, query: str, since: datetime | None = None, limit: int = 50, per_story: bool = False
    ) -> list[SearchHit]:
        """The best ``limit`` matches among the newest RANKED_MATCHES, best first. With
        ``per_story``: each story's best match (entries without a story left out), the
        stories in the order of those."""
        ...

    def entries(
        self,
        since: datetime | None = None,
        feed_ids: Sequence[int] | None = None,
        limit: int = 50,
    ) -> list[StoredEntry]: ...
    def stats(self) -> StoreStats: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
