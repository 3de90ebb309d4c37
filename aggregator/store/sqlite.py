"""SQLite store: stdlib sqlite3, WAL, one writer connection per process, readers never block it.

Every write is a ``BEGIN IMMEDIATE`` transaction; one feed's round result (feed state + all of
its entries) is one transaction, so a crash never leaves half a feed.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError
from .base import StoreStats
from .migrations import MIGRATIONS
from .sql import SQLStore
from .sqlite_search import SearchMixin

BUSY_TIMEOUT_MS = 10_000
# A checkpoint copies every page a commit changed into the database file. Each feed is one
# commit, and its entries land on pages all over the (random-ordered) indexes; checkpointing
# every 8,192 pages (32 MB of WAL) instead of every 1,000 copies a page changed by several
# feeds once. The WAL file is cut back to this size after a checkpoint.
WAL_CHECKPOINT_PAGES = 8192
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# The page cache of a bulk connection (a round's worker: it writes a round's entries, reads the
# clustering stage's batches, writes their stories and builds the full-text index), in KiB,
# against SQLite's 2,000 by default. With the default, the bench's 1000-feed cold round read
# 253,666 pages again from the log and the file (pread, counted by strace) and wrote 154,542 to
# the log (dirty pages spilled mid-transaction, written again at its commit); with this in the
# worker, 114,457 and 121,926, and 0.24 s less system time (1.28 s against 1.04 s, five pairs).
# (The round's process reads mostly what the worker wrote, which its own cache never held.)
BULK_CACHE_KIB = 64 * 1024
# Indexes a store's first load builds at its end rather than row by row (``defer_indexes``).
# The index of entries by time takes each entry at a random place (a feed's entries span its
# history, and feeds come in any order), and a B-tree grows slower to add to at random the
# larger it is: writing the 5000-feed bench's 252,500 entries as a round's worker does
# (bench/write_entries.py, two runs each), 3.01-3.03 s of CPU with it, 1.76-1.78 s without
# (0.42 s for the first 50,000 entries, 0.70-0.75 s for the fifth, against 0.33-0.36 s for
# each), and building it once at the end took 0.19 s.
DEFERRED_INDEXES = {
    "entries_published": "CREATE INDEX IF NOT EXISTS entries_published"
    " ON entries (published DESC, id DESC)",
}


def refused(e: BaseException) -> bool:
    """Whether ``e`` is SQLite refusing the database's work (a full disk, an I/O error, a lock,
    a damaged file): the exact types, not their subclasses for misuse (IntegrityError,
    ProgrammingError), which are bugs."""
    return type(e) in (sqlite3.DatabaseError, sqlite3.OperationalError)


def what_to_do(why: str) -> str:
    """What a user can do about a SQLite error (``why``: its message), met in a write or in a
    read: the CLI says the same of both."""
    if "locked" in why or "busy" in why:
        return "another process is writing it; try again"
    if "malformed" in why or "not a database" in why:
        return (
            "it is damaged: restore it from a backup, or rebuild it with"
            " `sqlite3 FILE .recover | sqlite3 NEW` and use NEW"
        )
    return "check the free space on its disk and the file's permissions"


class SQLiteStore(SearchMixin, SQLStore):
    def __init__(self, path: Path, *, readonly: bool = False, bulk: bool = False):
        self.path = path
        self.readonly = readonly
        try:
            if readonly:  # a WAL reader: never blocks the writer, never writes
                self.db = sqlite3.connect(
                    f"file:{path}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                )
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if self.schema_version() != max(v for v, _, _ in MIGRATIONS):
                    raise StoreError(
                        f"the store {path} needs an upgrade; run `aggregator update` once"
                    )
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA foreign_keys = ON")
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and str(path) != ":memory:":
                raise StoreError(f"cannot put {path} in WAL mode (got {mode})")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self.db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            self.db.execute("PRAGMA temp_store = MEMORY")
            if bulk:
                self.db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"cannot open the store {path}: {e}; check the path and permissions"
            ) from e
        except OSError as e:
            raise StoreError(f"cannot create the store {path}: {e.strerror or e}") from e

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    @property
    def target(self) -> str | None:
        return None if str(self.path) == ":memory:" else str(self.path)

    def cluster_snapshot_path(self) -> Path | None:
        if self.readonly or str(self.path) == ":memory:":
            return None
        return self.path.with_name(self.path.name + ".clusterer")

    _batched = False  # inside ``batch``: each write is a savepoint of its transaction
    # The queue is read through its own index (``entries_queue``, by id): without statistics
    # SQLite's planner walked the entries in published order instead, reading every entry,
    # placed or not, to find the few that are not.
    _QUEUE_INDEX = " INDEXED BY entries_queue"

    @contextmanager
    def _write(self):
        """A write transaction (in ``batch``, a savepoint of its one). A database error in it
        becomes a StoreError that says what SQLite said (a full disk, an I/O error, a damaged
        file), after what it wrote is undone."""
        batched = self._batched
        try:
            self.db.execute("SAVEPOINT w" if batched else "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(self._cannot_write(e)) from e
        try:
            yield self.db
            self.db.execute("RELEASE w" if batched else "COMMIT")
        except BaseException as e:
            # (SQLite rolls the whole transaction back itself on some errors, a full disk among
            # them: undone again, the undo's own error would hide this one)
            if self.db.in_transaction:
                self.db.execute("ROLLBACK TO w" if batched else "ROLLBACK")
                if batched:
                    self.db.execute("RELEASE w")
            if refused(e):
                raise StoreError(self._cannot_write(e)) from e
            raise

    def defer_indexes(self) -> bool:
        """Drop ``DEFERRED_INDEXES`` while the store holds no entry (its first round);
        whether it did. A query meanwhile still answers, reading the table instead. (A store
        with entries is told by a read: no round waits for the write lock for this.)"""
        if self._has_entries():
            return False
        with self._write() as db:
            if self._has_entries():  # (another process wrote some meanwhile)
                return False
            for name in DEFERRED_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {name}")
        return True

    def restore_indexes(self) -> None:
        missing = [name for name in DEFERRED_INDEXES if not self._has_index(name)]
        if missing:
            with self._write() as db:
                for name in missing:
                    db.execute(DEFERRED_INDEXES[name])

    def _has_entries(self) -> bool:
        return self.db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None

    def _has_index(self, name: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def _cannot_write(self, e: sqlite3.Error) -> str:
        why = str(e)
        return f"the store {self.path} cannot be written: {why}; {what_to_do(why)}"

    @contextmanager
    def batch(self):
        """One transaction around several writes, each of them a savepoint in it (one that
        fails is undone alone). Each commit in WAL mode appends every page it changed to the
        log: an all-304 round of 1000 feeds, two small commits each, logged 3,500 pages."""
        if self._batched:
            yield
            return
        with self._write():
            self._batched = True
            try:
                yield
            finally:
                self._batched = False

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            newest = max(v for v, _, _ in MIGRATIONS)
            if done and max(done) > newest:
                raise StoreError(
                    f"the store {self.path} was written by a newer aggregator "
                    f"(schema {max(done)} > {newest}); upgrade aggregator"
                )
            todo = [m for m in MIGRATIONS if m[0] not in done]
            if not todo:
                return
            # Pages a migration frees (a dropped table's) are not overwritten with zeros, as
            # SQLite builds with secure_delete on do: dropping the full-text index's copy of
            # the text (migration 9) of a 1,000,000-entry store held 440 MB of zeroed pages
            # in memory until the commit (597 MB of RSS, 3.1 s; with this, 16 MB and 0.2 s).
            # The space is reused by later writes; VACUUM gives it back to the disk.
            was = db.execute("PRAGMA secure_delete").fetchone()[0]
            db.execute("PRAGMA secure_delete = FAST")
            try:
                for version, name, sql in todo:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, strftime('%s','now'))",
                        (version, name),
                    )
            finally:
                db.execute(f"PRAGMA secure_delete = {int(was)}")

    def schema_version(self) -> int:
        return self.db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    def stats(self) -> StoreStats:
        feeds = self.db.execute("SELECT count(*) FROM feeds").fetchone()[0]
        entries = self.db.execute("SELECT count(*) FROM entries").fetchone()[0]
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        return StoreStats(feeds=feeds, entries=entries, size_bytes=page_size * pages)


def _statements(sql: str) -> list[str]:
    """The statements of a migration's script, in order: split at each ';' that ends one (a
    trigger's body holds several)."""
    out, statement = [], ""
    for part in sql.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                out.append(statement)
            statement = ""
    if statement.strip(" \n;"):
        out.append(statement)
    return out
