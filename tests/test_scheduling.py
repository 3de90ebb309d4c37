"""The pure scheduling rule, table by table."""

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.models import Outcome
from aggregator.scheduling import Decision, FeedState, Hints, ScheduleSettings, next_check

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOJIT = ScheduleSettings(jitter=0.0)
H = timedelta(hours=1)
M = timedelta(minutes=1)


NO_HINTS = Hints()


def decide(outcome=Outcome.OK, s=NOJIT, hints=NO_HINTS, **state) -> Decision:
    return next_check(NOW, outcome, FeedState(feed_id=state.pop("feed_id", 1), **state), hints, s)


@pytest.mark.parametrize(
    ("per_day", "interval"),
    [
        (None, 60 * M),  # no history: default
        (24, 60 * M),  # one an hour: hourly
        (96, 15 * M),  # every 15 min
        (1000, 10 * M),  # clamped to the minimum
        (2, 12 * H),  # twice a day
        (0.1, 24 * H),  # clamped to the maximum
    ],
)
def test_interval_follows_publishing_rate(per_day, interval):
    d = decide(entries_per_day=per_day)
    assert d.interval == interval and not d.disable


@pytest.mark.parametrize(
    ("hints", "interval", "reason"),
    [
        (Hints(max_age_seconds=7200), 2 * H, "max-age"),
        (Hints(feed_interval_minutes=180), 3 * H, "feed ttl"),
        (Hints(max_age_seconds=60), 60 * M, "default"),  # shorter than ours: ours stands
        (Hints(max_age_seconds=10**9), 24 * H, "max-age"),  # capped at the maximum
    ],
)
def test_never_sooner_than_the_feed_allows(hints, interval, reason):
    d = decide(hints=hints)
    assert d.interval == interval and reason in d.reason


def test_retry_after_wins_over_everything():
    later = NOW + timedelta(days=2)
    d = decide(hints=Hints(retry_after=later), entries_per_day=96)
    assert d.next_check_at == later and d.reason == "Retry-After"
    d = decide(Outcome.HTTP_ERROR, hints=Hints(retry_after=later), consecutive_errors=1)
    assert d.next_check_at == later


@pytest.mark.parametrize(
    ("errors", "interval"), [(1, 10 * M), (2, 20 * M), (3, 40 * M), (6, 320 * M), (20, 24 * H)]
)
def test_exponential_backoff(errors, interval):
    d = decide(Outcome.TIMEOUT, consecutive_errors=errors, error_since=NOW - H)
    assert d.interval == interval and not d.disable and "backoff" in d.reason


def test_disabled_after_a_week_of_failures():
    d = decide(
        Outcome.NETWORK_ERROR, consecutive_errors=30, error_since=NOW - timedelta(days=7, minutes=1)
    )
    assert (
        d.disable
        and "failing for 7.0 days" in d.disabled_reason
        and "feeds enable" in d.disabled_reason
    )
    d = decide(Outcome.NETWORK_ERROR, consecutive_errors=30, error_since=NOW - timedelta(days=6))
    assert not d.disable


def test_gone_disables_at_once():
    d = decide(Outcome.GONE)
    assert d.disable and "410" in d.disabled_reason


def test_jitter_is_bounded_deterministic_and_spreads_feeds():
    s = ScheduleSettings(jitter=0.1)
    got = [next_check(NOW, Outcome.OK, FeedState(i), Hints(), s).interval for i in range(200)]
    assert all(54 * M <= g <= 66 * M for g in got)
    assert len(set(got)) > 150
    assert got == [
        next_check(NOW, Outcome.OK, FeedState(i), Hints(), s).interval for i in range(200)
    ]


@pytest.mark.parametrize(
    "bad",
    [
        dict(min_interval_minutes=100, max_interval_minutes=10),
        dict(jitter=0.9),
        dict(default_interval_minutes=0),
    ],
)
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        ScheduleSettings(**bad).validate()
