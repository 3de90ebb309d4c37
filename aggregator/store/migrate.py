"""`aggregator migrate`: copy a SQLite store into an empty PostgreSQL store, for a user who
outgrows the embedded default. Every row of feeds, entries, stories, story blocks and
corrections keeps its id; the copy is one PostgreSQL transaction (COPY), so a failure leaves
the target as it was; the row counts are checked before it commits."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import StoreError
from .postgres import PostgresStore, redact, strip_nul
from .sqlite import SQLiteStore

# In dependency order (entries reference feeds). meta is handled apart.
TABLES = ("feeds", "entries", "stories", "story_blocks", "corrections")
META_KEYS = ("cluster_generation", "last_round")  # the search index mark is SQLite's own


def _columns(src: SQLiteStore, dst: PostgresStore, table: str) -> list[str]:
    theirs = {
        r[0]
        for r in dst.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = %s AND is_generated = 'NEVER'",
            (table,),
        )
    }
    ours = [r[1] for r in src.db.execute(f"PRAGMA table_info({table})")]
    missing = [c for c in ours if c not in theirs]
    if missing:
        raise StoreError(f"the target has no column {table}.{missing[0]}; upgrade aggregator")
    return ours


def copy_sqlite_to_postgres(
    src: SQLiteStore,
    dst: PostgresStore,
    on_table: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every row; returns rows copied per table. Refuses a target that holds any."""
    for table in TABLES:
        if dst.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]:
            raise StoreError(
                f"the PostgreSQL store {redact(dst.url)} is not empty ({table} has rows); "
                "migrate into an empty database or schema"
            )
    counts: dict[str, int] = {}
    with dst.conn.transaction():
        for table in TABLES:
            cols = _columns(src, dst, table)
            names = ", ".join(cols)
            n = 0
            with dst.conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in src.db.execute(f"SELECT {names} FROM {table} ORDER BY rowid"):
                    copy.write_row(strip_nul(row))
                    n += 1
            got = dst.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if got != n:
                raise StoreError(f"copied {n} rows of {table} but the target holds {got}")
            counts[table] = n
            if on_table is not None:
                on_table(table, n)
        for key in META_KEYS:
            value = src.get_meta(key)
            if value is not None:
                dst.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        for table in ("feeds", "entries", "corrections"):  # identities continue after the copy
            dst.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    return counts
