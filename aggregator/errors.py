"""The error tree. Every error a user can meet is one of these, with a message that says what is
wrong and what to do.

    AggregatorError
     ├── ConfigError            bad config file, unknown key, wrong type, bad value
     ├── InvalidURLError        a feed URL that is not absolute http(s)
     ├── StoreError             the store cannot be opened, migrated or written
     │    └── StoreLockedError  another daemon holds the store
     ├── NotFoundError          no such feed / entry / story
     │    └── FeedNotFoundError
     ├── FeedExistsError        the feed is already subscribed (carries the existing feed)
     ├── OPMLError              an OPML file that cannot be read
     ├── SearchSyntaxError      a search query that cannot be read
     └── FeedError              one feed could not be fetched or read; carries an outcome kind
          ├── FetchError        network, timeout, HTTP status, too large, gone
          └── ParseError        the body is not a readable feed
               └── NotAFeedError  the body is an HTML page (may carry feed links it names)

A feed's failure during a round never propagates: the pipeline turns it into a FetchResult /
outcome stored with the feed, so the rest of the round goes on.
"""

from __future__ import annotations

from .models import Outcome


class AggregatorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AggregatorError):
    pass


class InvalidURLError(AggregatorError):
    pass


class StoreError(AggregatorError):
    pass


class StoreLockedError(StoreError):
    pass


class ClusterConflictError(StoreError):
    """Stories changed under a clusterer (a correction, another process); rebuild and retry."""


class NotFoundError(AggregatorError):
    pass


class FeedNotFoundError(NotFoundError):
    pass


class FeedExistsError(AggregatorError):
    def __init__(self, message: str, feed=None):
        super().__init__(message)
        self.feed = feed


class OPMLError(AggregatorError):
    pass


class SearchSyntaxError(AggregatorError):
    """A full-text query the search engine cannot read."""


class FeedError(AggregatorError):
    """One feed failed. ``kind`` is the typed outcome stored with the feed."""

    kind: Outcome = Outcome.NETWORK_ERROR

    def __init__(self, message: str, kind: Outcome | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class FetchError(FeedError):
    pass


class ParseError(FeedError):
    kind = Outcome.PARSE_ERROR


class NotAFeedError(ParseError):
    def __init__(self, message: str, alternates: tuple[str, ...] = ()):
        super().__init__(message)
        self.alternates = alternates
