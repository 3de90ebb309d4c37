"""When to fetch a feed next: one pure function of (now, outcome, feed state, hints, settings).

    decision = next_check(now, outcome, state, hints, settings)
    decision.next_check_at, decision.interval, decision.reason, decision.disable

- A healthy feed is polled about as often as it publishes (entries per day: the last week's
  average, or the last 24 hours if busier), clamped to [min_interval, max_interval];
  ``default_interval`` when it has no history.
- Never sooner than the feed or server allows: Cache-Control max-age / Expires, RSS <ttl>,
  sy:updatePeriod (each capped at max_interval, so a bogus "one year" cannot silence a feed),
  nor before Retry-After.
- A failing feed backs off exponentially (backoff_base x 2^(errors-1), up to backoff_max);
  after ``disable_after`` of continuous failure it is disabled (``feeds enable`` turns it back
  on). 410 Gone disables at once.
- Jitter: +-``jitter`` of the interval, derived from (feed id, now) so that the function stays
  pure and feeds added together drift apart.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import msgspec

from .models import Outcome


class ScheduleSettings(msgspec.Struct, frozen=True):
    # Minutes between fetches of a feed with no publishing history yet.
    default_interval_minutes: float = 60.0
    # Bounds of the adaptive interval, in minutes.
    min_interval_minutes: float = 10.0
    max_interval_minutes: float = 1440.0
    # Share of the interval added or taken at random (deterministic per feed and time).
    jitter: float = 0.1
    # First retry after an error, and the longest wait between retries, in minutes.
    backoff_base_minutes: float = 10.0
    backoff_max_minutes: float = 1440.0
    # Days of continuous failure after which a feed is disabled.
    disable_after_days: float = 7.0

    def validate(self) -> None:
        for name in (
            "default_interval_minutes",
            "min_interval_minutes",
            "max_interval_minutes",
            "backoff_base_minutes",
            "backoff_max_minutes",
        ):
            if not 0.01 <= getattr(self, name) <= 525_600:
                raise ValueError(
                    f"schedule.{name} = {getattr(self, name)!r} is out of range; "
                    "use minutes between 0.01 and 525600"
                )
        if self.min_interval_minutes > self.max_interval_minutes:
            raise ValueError(
                "schedule.min_interval_minutes is above max_interval_minutes; swap them"
            )
        if not 0 <= self.jitter <= 0.5:
            raise ValueError(f"schedule.jitter = {self.jitter!r} is out of range; use 0 to 0.5")
        if not 0.001 <= self.disable_after_days <= 3650:
            raise ValueError("schedule.disable_after_days is out of range; use 0.001 to 3650")


class FeedState(msgspec.Struct, frozen=True):
    feed_id: int
    consecutive_errors: int = 0  # including the outcome being decided
    error_since: datetime | None = None  # first failure of the current run of failures
    entries_per_day: float | None = None  # over the last week


class Hints(msgspec.Struct, frozen=True):
    max_age_seconds: int | None = None  # Cache-Control max-age / Expires
    feed_interval_minutes: int | None = None  # RSS <ttl>, sy:updatePeriod/updateFrequency
    retry_after: datetime | None = None


class Decision(msgspec.Struct, frozen=True):
    next_check_at: datetime
    interval: timedelta
    reason: str
    disable: bool = False
    disabled_reason: str | None = None


def _jitter(feed_id: int, now: datetime, amount: float) -> float:
    """A number in [-amount, +amount], fixed for (feed_id, now)."""
    digest = hashlib.blake2b(f"{feed_id}:{now.isoformat()}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64  # [0, 1)
    return (2 * unit - 1) * amount


def next_check(
    now: datetime, outcome: Outcome, state: FeedState, hints: Hints, s: ScheduleSettings
) -> Decision:
    lo = timedelta(minutes=s.min_interval_minutes)
    hi = timedelta(minutes=s.max_interval_minutes)
    if outcome is Outcome.GONE:
        return Decision(now, timedelta(0), "gone", True, "the server said 410 Gone")
    if outcome.failed:
        errors = max(1, state.consecutive_errors)
        interval = min(
            timedelta(minutes=s.backoff_base_minutes) * 2 ** (errors - 1),
            timedelta(minutes=s.backoff_max_minutes),
        )
        reason = f"backoff after {errors} error{'s' if errors > 1 else ''}"
        since = state.error_since or now
        if now - since >= timedelta(days=s.disable_after_days):
            days = (now - since).total_seconds() / 86400
            return Decision(
                now,
                timedelta(0),
                "disabled",
                True,
                f"failing for {days:.1f} days ({outcome.value}); "
                "`aggregator feeds enable` turns it back on",
            )
    else:
        if state.entries_per_day:
            interval = timedelta(days=1) / state.entries_per_day
            reason = f"publishes ~{state.entries_per_day:.1f}/day"
        else:
            interval = timedelta(minutes=s.default_interval_minutes)
            reason = "default interval"
        interval = min(max(interval, lo), hi)
        floors = []
        if hints.max_age_seconds:
            floors.append((timedelta(seconds=hints.max_age_seconds), "max-age"))
        if hints.feed_interval_minutes:
            floors.append((timedelta(minutes=hints.feed_interval_minutes), "feed ttl"))
        for floor, name in floors:
            floor = min(floor, hi)
            if floor > interval:
                interval, reason = floor, f"{name} asks for {floor}"
    interval = interval * (1 + _jitter(state.feed_id, now, s.jitter))
    when = now + interval
    if hints.retry_after and hints.retry_after > when:
        when, reason = hints.retry_after, "Retry-After"
    return Decision(when, when - now, reason)
