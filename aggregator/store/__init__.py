"""Storage behind one protocol. ``open_store(target)`` picks the backend from the target:
a ``postgresql://`` URL is PostgreSQL; a path (or empty: the default file) is SQLite."""

from __future__ import annotations

from pathlib import Path

from .base import Store, StoreStats
from .postgres import PostgresStore, is_postgres_url
from .sqlite import SQLiteStore

__all__ = [
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreStats",
    "default_db_path",
    "is_postgres_url",
    "open_store",
]


def default_db_path() -> Path:
    import platformdirs  # (here: most commands name their store, and it costs ~5 ms)

    return Path(platformdirs.user_data_dir("aggregator", appauthor=False)) / "aggregator.sqlite"


def open_store(
    target: str | Path | None = None, *, readonly: bool = False, bulk: bool = False
) -> Store:
    """The store at ``target`` (a PostgreSQL URL, or a SQLite file: the default one when
    None). ``bulk``: a connection that writes and reads much of a round (a round's worker), with
    room for more of the store in memory where that saves reading it again (SQLite's page
    cache)."""
    text = str(target) if target else ""
    if is_postgres_url(text):
        return PostgresStore(text, readonly=readonly)
    path = Path(text).expanduser() if text else default_db_path()
    return SQLiteStore(path, readonly=readonly, bulk=bulk)
