"""The library API. The CLI and the daemon are thin shells over this class.

with Aggregator.open(db="news.sqlite") as agg:
    agg.add_feed("https://example.com/feed.xml")
    summary = agg.update()
    for e in agg.entries(since=timedelta(hours=24)):
        ...
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .config import Settings, load_settings
from .errors import (
    FeedExistsError,
    FeedNotFoundError,
    InvalidURLError,
    NotAFeedError,
    NotFoundError,
    OPMLError,
    ParseError,
    StoreError,
)
from .models import (
    Feed,
    FeedUpdateResult,
    FetchRequest,
    Outcome,
    RoundSummary,
    SearchHit,
    StoredEntry,
    Story,
    StoryDetail,
)
from .normalize import feed_url, utcnow
from .store import Store, StoreStats, open_store

if TYPE_CHECKING:
    from .clustering import ClusteringStage, ClusterSummary
    from .dedup.explain import Explanation

# What only rounds, fetches and OPML need (httpx, the parsers, the pipeline) is imported where it
# is used: a query (`aggregator stories`, `search`) starts in about half the time without them.


class AddResult(msgspec.Struct, frozen=True):
    feed: Feed
    note: str | None = None  # e.g. "the page links the feed X; added that instead"
    result: FeedUpdateResult | None = None


class ImportResult(msgspec.Struct, frozen=True):
    added: int
    existing: int
    invalid: tuple[str, ...]


def validate_feed_url(url: str) -> str:
    try:
        return feed_url(url)
    except ValueError as e:
        raise InvalidURLError(f"{e}; a feed URL looks like https://example.com/feed.xml") from None


class Aggregator:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.settings = settings
        self.clock = clock
        self._clustering: ClusteringStage | None = None

    @property
    def clustering(self) -> ClusteringStage:
        """The clustering stage, kept between rounds (with its clusterer); made when first
        needed, so that a query never loads it."""
        if self._clustering is None:
            from .clustering import ClusteringStage

            self._clustering = ClusteringStage(self.settings.cluster)
        return self._clustering

    @classmethod
    def open(
        cls,
        db: str | Path | None = None,
        settings: Settings | None = None,
        config_path: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Aggregator:
        settings = settings or load_settings(config_path)
        store = open_store(db or settings.store.path or None)
        return cls(store, settings, clock)

    def close(self) -> None:
        """Keep the clusterer for the next process (a snapshot next to the store; see
        clustering.py), then close the store. A snapshot that cannot be written is skipped:
        the next process rebuilds the clusterer from the store instead."""
        try:
            if self._clustering is not None:
                self._clustering.save(self.store)
        except (OSError, pickle.PicklingError, RecursionError) as e:
            print(
                f"aggregator: clustering snapshot not written ({e}); nothing is lost",
                file=sys.stderr,
            )
        finally:
            self.store.close()

    def __enter__(self) -> Aggregator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- feeds ----------------------------------------------------------------------------------

    def feeds(self) -> list[Feed]:
        return self.store.list_feeds()

    def feed(self, ref: str | int) -> Feed:
        if isinstance(ref, str) and not ref.isdigit():
            with contextlib.suppress(ValueError):
                ref = feed_url(ref)
        return self.store.get_feed(ref)

    def add_feed(self, url: str, title: str | None = None, check: bool = True) -> AddResult:
        """Subscribe to ``url``. With ``check``, fetch it once: an HTML page that links a feed
        subscribes to that feed instead; a page that links none is refused; the entries of the
        first fetch are stored right away. A network failure still adds the feed, with a note."""
        url = validate_feed_url(url)
        self._refuse_existing(url)
        if not check:
            return AddResult(self.store.add_feed(url, title, self.clock()))
        fetched = self._fetch_once(url)
        note = None
        if fetched.outcome is Outcome.OK and fetched.body is not None:
            from .parse import parse_feed

            try:
                parse_feed(fetched.body, fetched.url, fetched.content_type)
            except NotAFeedError as e:
                if not e.alternates:
                    raise NotAFeedError(f"{url}: {e}") from None
                url = validate_feed_url(e.alternates[0])
                self._refuse_existing(url)
                note = f"{fetched.url} is a web page; subscribed to the feed it links: {url}"
                fetched = self._fetch_once(url)
            except ParseError:
                pass  # stored below as the feed's parse error, like any round would
        elif fetched.outcome.failed:
            note = f"added, but the first fetch failed: {fetched.error or fetched.outcome.value}"
        feed = self.store.add_feed(url, title, self.clock())
        fetched = msgspec.structs.replace(fetched, feed_id=feed.id)
        from . import pipeline

        res = pipeline.process_result(self.store, fetched, self.clock(), self.settings)
        if res.new_entries:
            self.clustering.run(self.store, self.clock())  # its first entries get stories now
        if res.outcome is Outcome.PARSE_ERROR and note is None:
            note = f"added, but it could not be read as a feed: {res.error}"
        return AddResult(self.store.get_feed(feed.id), note, res)

    def _refuse_existing(self, url: str) -> None:
        try:
            existing = self.store.get_feed(url)
        except FeedNotFoundError:
            return
        raise FeedExistsError(
            f"already subscribed to {existing.url} (id {existing.id}); nothing changed", existing
        )

    def _fetch_once(self, url: str):
        import asyncio

        from .fetch import fetch_feed, make_client

        async def go():
            async with make_client(self.settings.fetch) as client:
                return await fetch_feed(
                    client, FetchRequest(0, url), self.settings.fetch, self.clock()
                )

        return asyncio.run(go())

    def remove_feed(self, ref: str | int) -> Feed:
        feed = self.feed(ref)
        self.store.remove_feed(feed.id)
        return feed

    def import_opml(self, path: Path) -> ImportResult:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise OPMLError(f"cannot read {path}: {e.strerror or e}") from None
        from .opml import read_opml

        added = existing = 0
        invalid: list[str] = []
        for item in read_opml(data):
            try:
                url = validate_feed_url(item.url)
                self.store.add_feed(url, item.title, self.clock())
                added += 1
            except InvalidURLError:
                invalid.append(item.url)
            except FeedExistsError:
                existing += 1
        return ImportResult(added, existing, tuple(invalid))

    def export_opml(self) -> str:
        from .opml import write_opml

        return write_opml(self.feeds(), self.clock())

    # -- updating -------------------------------------------------------------------------------

    def update(
        self,
        feeds: Sequence[str | int] | None = None,
        on_result: Callable[[FeedUpdateResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        due_only: bool = False,
        stop: threading.Event | None = None,
        keep_clusterer: bool = True,
    ) -> RoundSummary:
        """One round: every live feed (or the given ones, or with ``due_only`` the ones whose
        scheduled check has come), then clustering. ``stop`` cancels fetches in flight.
        ``keep_clusterer=False``: this is the last round this object clusters (the CLI's
        `update`); a clustering process may then read the clusterer snapshot while the
        round fetches, and cluster there (see pipeline.update)."""
        from . import pipeline

        ids = [self.feed(f).id for f in feeds] if feeds else None
        return pipeline.update(
            self.store,
            self.settings,
            self.clock,
            ids,
            on_result,
            on_start,
            self.clustering,
            due_only=due_only,
            stop=stop,
            keep_clusterer=keep_clusterer,
        )

    def enable_feed(self, ref: str | int) -> Feed:
        feed = self.feed(ref)
        self.store.enable_feed(feed.id)
        return self.store.get_feed(feed.id)

    def status(self) -> dict:
        now = self.clock()
        last = self.store.get_meta("last_round")
        stats = self.store.stats()
        return {
            "feeds": self.store.feed_counts(now),
            "entries": stats.entries,
            "stories": self.store.story_count(),
            "store_bytes": stats.size_bytes,
            "last_round": json.loads(last) if last else None,
        }

    def record_round(self, summary: RoundSummary) -> None:
        self.store.set_meta(
            "last_round",
            json.dumps(
                {
                    "finished_at": summary.finished_at.isoformat(),
                    "seconds": round((summary.finished_at - summary.started_at).total_seconds(), 3),
                    "feeds": len(summary.results),
                    "ok": summary.ok,
                    "not_modified": summary.not_modified,
                    "failed": summary.failed,
                    "new_entries": summary.new_entries,
                    "clustered": summary.clustered,
                    "summary": summary.line(),
                }
            ),
        )

    def cleanup(self) -> tuple[int, int]:
        """Retention: remove entries and stories older than daemon.retention_days."""
        cutoff = self.clock() - timedelta(days=self.settings.daemon.retention_days)
        removed = self.store.remove_older_than(cutoff)
        self.store.purge_search_index()
        return removed

    def export(
        self,
        fmt: str,
        since: timedelta | datetime | None = None,
        min_sources: int = 1,
        limit: int = 200,
        self_url: str = "urn:aggregator:stories",
    ) -> str:
        """The merged stories as an Atom 1.0 or JSON Feed 1.1 document, or the subscriptions
        as OPML."""
        from .export import stories_atom, stories_jsonfeed

        if fmt == "opml":
            return self.export_opml()
        details = [
            self.store.story(s.id)
            for s in self.stories(since=since, min_sources=min_sources, limit=limit)
        ]
        if fmt == "atom":
            return stories_atom(details, self.clock(), self_url)
        if fmt == "jsonfeed":
            return stories_jsonfeed(details, self.clock(), self_url)
        raise ValueError(f"unknown export format {fmt!r}")

    def search(
        self,
        query: str,
        since: timedelta | datetime | None = None,
        limit: int = 50,
        stories: bool = False,
    ) -> list[SearchHit] | list[tuple[Story, SearchHit]]:
        """Full-text search over titles and summaries, best match first. With ``stories``,
        one result per story (its best-matching entry)."""
        if isinstance(since, timedelta):
            since = self.clock() - since
        if not stories:
            return self.store.search(query, since=since, limit=limit)
        out: list[tuple[Story, SearchHit]] = []
        for hit in self.store.search(query, since=since, limit=limit, per_story=True):
            try:
                story = self.store.story(hit.entry.story_id).story
            except NotFoundError:  # merged into another or removed since the search
                continue
            out.append((story, hit))
        return out

    def migrate_to(
        self, target: str, on_table: Callable[[str, int], None] | None = None
    ) -> dict[str, int]:
        """Copy this SQLite store, every row, into the empty PostgreSQL store at ``target``
        (a postgresql:// URL). Returns the rows copied per table."""
        from .store import PostgresStore, SQLiteStore, is_postgres_url
        from .store.migrate import copy_sqlite_to_postgres

        if not isinstance(self.store, SQLiteStore):
            raise StoreError("migrate copies a SQLite store; give its path with --db")
        if not is_postgres_url(target):
            raise StoreError(
                f"the target {target!r} is not a PostgreSQL URL; "
                "use postgresql://user@host:port/database"
            )
        self.store.index_pending()
        dst = PostgresStore(target)
        try:
            return copy_sqlite_to_postgres(self.store, dst, on_table)
        finally:
            dst.close()

    def cluster(self) -> ClusterSummary:
        """Place every stored entry that has no story yet (``update`` does this itself)."""
        return self.clustering.run(self.store, self.clock())

    # -- queries --------------------------------------------------------------------------------

    def entries(
        self,
        since: timedelta | datetime | None = None,
        feeds: Sequence[str | int] | None = None,
        limit: int = 50,
    ) -> list[StoredEntry]:
        if isinstance(since, timedelta):
            since = self.clock() - since
        ids = [self.feed(f).id for f in feeds] if feeds else None
        return self.store.entries(since=since, feed_ids=ids, limit=limit)

    def stats(self) -> StoreStats:
        return self.store.stats()

    # -- stories --------------------------------------------------------------------------------

    def stories(
        self,
        since: timedelta | datetime | None = None,
        min_sources: int = 1,
        feeds: Sequence[str | int] | None = None,
        search: str | None = None,
        limit: int = 50,
    ) -> list[Story]:
        if isinstance(since, timedelta):
            since = self.clock() - since
        ids = [self.feed(f).id for f in feeds] if feeds else None
        return self.store.stories(
            since=since, min_sources=min_sources, feed_ids=ids, search=search, limit=limit
        )

    def story(self, story_id: int) -> StoryDetail:
        return self.store.story(story_id)

    def merge_stories(self, keep: int, other: int) -> StoryDetail:
        self.store.merge_stories(keep, other, self.clock())
        return self.store.story(keep)

    def split_story(self, story_id: int, entry_ids: Sequence[int]) -> StoryDetail:
        new_id = self.store.split_story(story_id, list(entry_ids), self.clock())
        return self.store.story(new_id)

    def detach_entry(self, entry_id: int) -> StoryDetail:
        return self.store.story(self.store.detach_entry(entry_id, self.clock()))

    def explain(self, entry_a: int, entry_b: int) -> Explanation:
        """Why two entries would (or would not) be put in one story: the later one is scored
        against a story made of the earlier one, with the statistics of the current window."""
        a, b = self.store.entry_item(entry_a), self.store.entry_item(entry_b)
        if (b.published, b.entry_id) < (a.published, a.entry_id):
            a, b = b, a
        from .clustering import to_item
        from .dedup.explain import explain_pair

        clusterer = self.clustering._fresh(self.store, a.published)
        return explain_pair(clusterer, to_item(a), to_item(b))
