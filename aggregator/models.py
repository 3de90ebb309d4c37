"""Plain data passed between the stages: frozen records. Imports nothing internal.

The records here, and the settings and results beside them elsewhere, are msgspec Structs, not
dataclasses: the same frozen, slotted, comparable, hashable, picklable records, whose classes
are made in C. Python 3.11 compiles a frozen dataclass's methods from source as its module is
imported, 1.0-2.5 ms a class here, and every command imported 27 of them: 35 ms of the
~140 ms an `aggregator stories` took on a 1,000,000-entry store, before its query (0.3 ms).
An instance is also made in a tenth of the time (0.14 against 1.4 us for a 9-field record),
and rounds make several per entry."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class Outcome(enum.StrEnum):
    """How one fetch of one feed ended. Stored with the feed as ``last_status``."""

    OK = "ok"
    NOT_MODIFIED = "not_modified"  # 304, or a 200 whose body hash equals the last one
    GONE = "gone"  # 410: polling stops
    HTTP_ERROR = "http_error"  # any other non-2xx status
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"  # body passed the size cap (decoded size)
    NETWORK_ERROR = "network_error"  # DNS, refused, reset, TLS, bad redirect ...
    PARSE_ERROR = "parse_error"  # body is not a readable feed

    @property
    def failed(self) -> bool:
        return self not in (Outcome.OK, Outcome.NOT_MODIFIED)


class Feed(msgspec.Struct, frozen=True):
    id: int
    url: str
    title: str | None = None
    user_title: str | None = None
    site_url: str | None = None
    added_at: datetime | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_status: str | None = None
    last_http_status: int | None = None
    last_error: str | None = None
    last_fetched_at: datetime | None = None
    last_ok_at: datetime | None = None
    retry_after: datetime | None = None
    gone: bool = False
    previous_urls: tuple[str, ...] = ()
    entry_count: int = 0
    next_check_at: datetime | None = None
    consecutive_errors: int = 0
    disabled_reason: str | None = None
    schedule_reason: str | None = None

    @property
    def display_title(self) -> str:
        return self.user_title or self.title or self.url


class FetchRequest(msgspec.Struct, frozen=True):
    """What the fetcher needs to know about a feed: where, and what we saw last time."""

    feed_id: int
    url: str
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    retry_after: datetime | None = None  # not fetched before this time (Retry-After)


class FetchResult(msgspec.Struct, frozen=True):
    feed_id: int
    outcome: Outcome
    url: str  # the URL finally fetched (after redirects)
    permanent_url: str | None = None  # set when every redirect hop was 301/308
    status_code: int | None = None
    body: bytes | None = None
    body_hash: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: datetime | None = None
    max_age_seconds: int | None = None  # Cache-Control max-age / Expires
    error: str | None = None
    elapsed: float = 0.0


class RawEntry(msgspec.Struct, frozen=True):
    """One entry as the parser read it: strings as found, dates already in UTC when known."""

    guid: str | None
    link: str | None
    title: str | None
    summary_html: str | None
    content_html: str | None
    author: str | None
    published: datetime | None
    updated: datetime | None


class ParsedFeed(msgspec.Struct, frozen=True):
    format: str  # rss20, atom10, rss10, json11 ...
    title: str | None
    link: str | None
    entries: tuple[RawEntry, ...]
    warning: str | None = None  # set when the feed was only partly readable (bozo)
    ttl_minutes: int | None = None  # RSS <ttl> or sy:updatePeriod/updateFrequency, the larger


class Entry(msgspec.Struct, frozen=True):
    """A normalized entry, ready to store. ``key`` is its identity within its feed."""

    feed_id: int
    key: str
    guid: str | None
    url: str | None  # canonical
    link: str | None  # as published
    title: str
    summary: str  # plain text
    summary_html: str | None
    author: str | None
    published: datetime  # UTC; first-seen time when the feed gave none
    updated: datetime | None
    content_hash: str


class StoredEntry(msgspec.Struct, frozen=True):
    id: int
    feed_id: int
    feed_title: str
    key: str
    url: str | None
    link: str | None
    title: str
    summary: str
    author: str | None
    published: datetime
    updated: datetime | None
    first_seen: datetime
    story_id: int | None = None


class FeedUpdateResult(msgspec.Struct, frozen=True):
    """What one feed's part of a round did."""

    feed_id: int
    url: str
    outcome: Outcome
    new_entries: int = 0
    updated_entries: int = 0
    error: str | None = None
    warning: str | None = None


class RoundSummary(msgspec.Struct, frozen=True):
    started_at: datetime
    finished_at: datetime
    results: tuple[FeedUpdateResult, ...] = ()
    skipped: int = 0  # feeds not fetched because a Retry-After has not passed
    clustered: int = 0  # entries placed in stories after the round
    stories_touched: int = 0  # stories created or grown
    clustering_deferred: bool = False  # another worker clusters this (shared) store
    fetched_at: datetime | None = None  # when every feed was fetched and written

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    @property
    def ok(self) -> int:
        return self.count(Outcome.OK)

    @property
    def not_modified(self) -> int:
        return self.count(Outcome.NOT_MODIFIED)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.outcome.failed)

    @property
    def new_entries(self) -> int:
        return sum(r.new_entries for r in self.results)

    @property
    def updated_entries(self) -> int:
        return sum(r.updated_entries for r in self.results)

    def line(self) -> str:
        secs = (self.finished_at - self.started_at).total_seconds()
        phases = ""
        if self.fetched_at is not None and self.clustered:
            fetching = (self.fetched_at - self.started_at).total_seconds()
            clustering = (self.finished_at - self.fetched_at).total_seconds()
            phases = f" ({fetching:.1f}s fetching and storing, {clustering:.1f}s clustering)"
        return (
            f"{len(self.results)} feeds in {secs:.1f}s{phases}: {self.ok} ok, "
            f"{self.not_modified} not modified, {self.failed} failed; "
            f"{self.new_entries} new entries, {self.updated_entries} updated"
            + (f"; {self.skipped} skipped (Retry-After)" if self.skipped else "")
            + (
                f"; {self.clustered} clustered into {self.stories_touched} stories"
                if self.clustered
                else ""
            )
            + ("; clustering left to the worker that leads it" if self.clustering_deferred else "")
        )


class Story(msgspec.Struct, frozen=True):
    id: int
    title: str
    first_seen: datetime
    last_updated: datetime
    entry_count: int
    source_count: int
    rep_entry_id: int | None = None


class StoryMember(msgspec.Struct, frozen=True):
    entry_id: int
    feed_id: int
    outlet: str
    title: str
    link: str | None
    url: str | None
    published: datetime
    score: float | None
    reason: str | None
    pinned: bool = False


class StoryDetail(msgspec.Struct, frozen=True):
    story: Story
    members: tuple[StoryMember, ...]


class SearchHit(msgspec.Struct, frozen=True):
    entry: StoredEntry
    snippet: str  # matched words between \x02 and \x03
    rank: float  # bm25: lower is better


class ClusterItem(msgspec.Struct, frozen=True):
    """What clustering reads of a stored entry."""

    entry_id: int
    feed_id: int
    url: str | None
    title: str
    summary: str
    published: datetime
    story_id: int | None = None
