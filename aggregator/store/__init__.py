"""Storage behind one protocol. ``open_store(target)`` picks the backend from the target:
a path (or empty: the default file) is SQLite."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from ..errors import StoreError
from .base import Store, StoreStats
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoreStats", "default_db_path", "open_store"]


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("aggregator", appauthor=False)) / "aggregator.sqlite"


def open_store(target: str | Path | None = None, *, readonly: bool = False) -> Store:
    text = str(target) if target else ""
    if text.startswith(("postgres://", "postgresql://")):
        raise StoreError("PostgreSQL stores are not supported by this version; use a SQLite path")
    path = Path(text).expanduser() if text else default_db_path()
    return SQLiteStore(path, readonly=readonly)
