"""The public names are a promise: adding or removing one is a deliberate change."""

import aggregator

PUBLIC = {
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
}


def test_exported_names_are_pinned():
    assert set(aggregator.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(aggregator, name), name


def test_every_error_is_an_aggregator_error():
    for name in PUBLIC:
        obj = getattr(aggregator, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aggregator.AggregatorError), name
