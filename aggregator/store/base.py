"""The store protocol: what the pipeline and the API need from any backend."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..models import Entry, Feed, FetchRequest, FetchResult, ParsedFeed, StoredEntry


@dataclass(frozen=True, slots=True)
class StoreStats:
    feeds: int
    entries: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    new: int
    updated: int


class Store(Protocol):
    def close(self) -> None: ...

    # feeds
    def add_feed(self, url: str, title: str | None, now: datetime) -> Feed: ...
    def get_feed(self, ref: str | int) -> Feed: ...
    def list_feeds(self) -> list[Feed]: ...
    def remove_feed(self, feed_id: int) -> None: ...
    def set_feed_title(self, feed_id: int, title: str | None) -> None: ...
    def fetch_requests(self, feed_ids: Sequence[int] | None = None) -> list[FetchRequest]: ...

    # one feed's result of a round, in one transaction
    def write_feed_result(
        self,
        fetch: FetchResult,
        parsed: ParsedFeed | None,
        entries: Iterable[Entry],
        error: str | None,
        now: datetime,
    ) -> WriteResult: ...

    # queries
    def entries(
        self,
        since: datetime | None = None,
        feed_ids: Sequence[int] | None = None,
        limit: int = 50,
    ) -> list[StoredEntry]: ...

    def stats(self) -> StoreStats: ...
