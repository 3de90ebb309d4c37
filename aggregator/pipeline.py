"""One round of updates. The whole flow, one way:

    requests (feeds to fetch, from the store)
      | fetch      concurrently, at most ``fetch.concurrency`` at once   (fetch.py, I/O)
      | parse      bytes -> ParsedFeed; skipped for 304 / same body hash  (parse.py, pure)
      | normalize  ParsedFeed -> [Entry] with canonical URLs, text, UTC  (normalize.py, pure)
      | write      feed state + entries, one transaction per feed       (store, I/O)
    then
    cluster        entries without a story, oldest first -> stories        (clustering.py)
      -> RoundSummary

A feed's failure is a value (its Outcome), never an exception, so one bad feed cannot stop the
round. ``clock`` is the only source of time; the pure stages get ``now`` from it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from .clustering import ClusteringStage
from .config import Settings
from .errors import ParseError
from .fetch import fetch_feed, make_client
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
from .parse import parse_feed
from .scheduling import FeedState, Hints, next_check
from .store.base import Store

Clock = Callable[[], datetime]
OnResult = Callable[[FeedUpdateResult], None]


def prepare(fetch: FetchResult, now: datetime) -> tuple[ParsedFeed | None, list[Entry], str | None]:
    """Pure: a fetch result -> (parsed feed, normalized entries, error message)."""
    if fetch.outcome is not Outcome.OK or fetch.body is None:
        return None, [], None
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


def process_result(
    store: Store, fetch: FetchResult, now: datetime, settings: Settings | None = None
) -> FeedUpdateResult:
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


async def run_round(
    store: Store,
    requests: Sequence[FetchRequest],
    settings: Settings,
    clock: Clock,
    on_result: OnResult | None = None,
    stop: threading.Event | None = None,
) -> RoundSummary:
    """Fetch ``requests`` concurrently (a global and a per-host limit) and process each result
    as it arrives. Setting ``stop`` cancels the fetches still in flight; what is complete is
    already written."""
    started = clock()
    results: list[FeedUpdateResult] = []
    limit = asyncio.Semaphore(settings.fetch.concurrency)
    per_host = settings.fetch.per_host
    hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_host))

    async with make_client(settings.fetch) as client:

        async def one(req: FetchRequest) -> FetchResult:
            host = urlsplit(req.url).hostname or ""
            async with limit:
                if not per_host:
                    return await fetch_feed(client, req, settings.fetch, clock())
                async with hosts[host]:
                    return await fetch_feed(client, req, settings.fetch, clock())

        tasks = [asyncio.create_task(one(r)) for r in requests]
        watcher = asyncio.create_task(_cancel_on(stop, tasks)) if stop is not None else None
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    fetched = await next_done
                except asyncio.CancelledError:
                    break
                res = process_result(store, fetched, clock(), settings)
                results.append(res)
                if on_result is not None:
                    on_result(res)
        finally:
            for t in tasks:
                t.cancel()
            if watcher is not None:
                watcher.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return RoundSummary(started_at=started, finished_at=clock(), results=tuple(results))


async def _cancel_on(stop: threading.Event, tasks: list[asyncio.Task]) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()


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
) -> RoundSummary:
    """Synchronous entry point: one round over ``feed_ids`` (all live feeds when None; with
    ``due_only``, those whose scheduled check has come), then the clustering stage over every
    entry that has no story yet. The CLI's `update` and the daemon's tick both call this."""
    now = clock()
    requests = store.fetch_requests(feed_ids, due_before=now if due_only else None)
    due = [r for r in requests if r.retry_after is None or r.retry_after <= now]
    if on_start is not None:
        on_start(len(due))
    summary = asyncio.run(run_round(store, due, settings, clock, on_result, stop))
    stage = clustering or ClusteringStage(settings.cluster)
    clustered = stage.run(store, clock())
    store.index_pending()  # full-text index, in one batch per round
    return RoundSummary(
        started_at=summary.started_at,
        finished_at=clock(),
        results=summary.results,
        skipped=len(requests) - len(due),
        clustered=clustered.entries,
        stories_touched=clustered.stories_touched,
    )
