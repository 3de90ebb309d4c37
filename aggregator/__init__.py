"""aggregator: fetch news feeds, merge the same event from many outlets into one story."""

from ._version import __version__

__all__ = ["__version__"]
