"""aggregator: fetch news feeds, merge the same event from many outlets into one story.

from aggregator import Aggregator
with Aggregator.open(db="news.sqlite") as agg:
    agg.add_feed("https://example.com/feed.xml")
    agg.update()
    for story in agg.stories(min_sources=2):
        print(story.title, story.source_count)
"""

from ._version import __version__
from .api import AddResult, Aggregator, ImportResult
from .config import Settings, load_settings
from .dedup.base import ClusterSettings
from .errors import (
    AggregatorError,
    ConfigError,
    FeedError,
    FeedExistsError,
    FeedNotFoundError,
    FetchError,
    InvalidURLError,
    NotAFeedError,
    NotFoundError,
    OPMLError,
    ParseError,
    StoreError,
    StoreLockedError,
)
from .models import (
    Entry,
    Feed,
    FeedUpdateResult,
    Outcome,
    RoundSummary,
    Story,
    StoryDetail,
    StoryMember,
)

__all__ = [
    "AddResult",
    "Aggregator",
    "AggregatorError",
    "ClusterSettings",
    "ConfigError",
    "Entry",
    "Feed",
    "FeedError",
    "FeedExistsError",
    "FeedNotFoundError",
    "FeedUpdateResult",
    "FetchError",
    "ImportResult",
    "InvalidURLError",
    "NotAFeedError",
    "NotFoundError",
    "OPMLError",
    "Outcome",
    "ParseError",
    "RoundSummary",
    "Settings",
    "StoreError",
    "StoreLockedError",
    "Story",
    "StoryDetail",
    "StoryMember",
    "__version__",
    "load_settings",
]
