"""PostgreSQL store (psycopg 3), for users who outgrow one machine: several daemons, on one or
many machines, share one database and coordinate through it.

- Same behaviour as SQLite: every query and write is SQLStore's; this module adds the
  connection, migrations, sizes and search (a tsvector column kept by a trigger, GIN-indexed,
  searched with the same syntax as FTS5, see tsquery.py).
- Feeds are leased with ``SELECT ... FOR UPDATE SKIP LOCKED`` (SQLStore.claim_feeds), so each
  due feed goes to one worker; a crashed worker's feeds go to others when its lease ends.
- Clustering keeps in-memory state that must match the stored stories, so one worker clusters:
  the holder of a session-level advisory lock. The lock goes with the session, so when that
  worker dies (or loses its connection) another takes over on its next round, starting from
  the store. Story writes also lock the correction counter row, so a correction and a
  clustering write never interleave.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

from ..errors import SearchSyntaxError, StoreError
from ..models import SearchHit
from ._rows import ENTRY_COLUMNS, stored_entry
from ._rows import ts as _ts
from .base import StoreStats
from .pg_migrations import PG_MIGRATIONS
from .sql import SQLStore
from .tsquery import to_tsquery

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 120_000  # no query of ours takes minutes; a stuck one fails clearly
LOCK_TIMEOUT_MS = 30_000
RANKED_MATCHES = 5000  # as in SQLite: rank the newest matches only
HIT_START, HIT_END = "\x02", "\x03"
HEADLINE = f"StartSel={HIT_START}, StopSel={HIT_END}, MaxWords=16, MinWords=6, MaxFragments=1"


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgres://", "postgresql://"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """SQLStore's ``?`` placeholders -> psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def strip_nul(params):
    # PostgreSQL text cannot hold NUL characters; feeds in the wild sometimes carry them.
    return [p.replace("\x00", "") if isinstance(p, str) and "\x00" in p else p for p in params]


class _Connection:
    """The sqlite3-like surface SQLStore uses (execute/executemany -> cursor), over psycopg."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params=None):
        if params is None:
            return self.conn.execute(sql)
        return self.conn.execute(_pg_sql(sql), strip_nul(params))

    def executemany(self, sql: str, rows):
        cur = self.conn.cursor()
        cur.executemany(_pg_sql(sql), [strip_nul(r) for r in rows])
        return cur


class PostgresStore(SQLStore):
    _LOCK_ROWS = " FOR UPDATE SKIP LOCKED"
    _FOR_UPDATE = " FOR UPDATE"
    _LIKE = "ILIKE"
    shared = True

    def __init__(self, url: str, *, readonly: bool = False):
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "PostgreSQL stores need psycopg; install it with "
                "`pip install 'aggregator[postgres]'` (or `pip install 'psycopg[binary]'`)"
            ) from None
        self._psycopg = psycopg
        self.url = self.target = url
        self.path = None  # no file: the daemon's one-per-store lock does not apply
        self.readonly = readonly
        self._leading = False
        self.lead_term = 0  # +1 each time this store takes the clustering lock
        self._connect()
        try:
            if readonly:
                newest = max(v for v, _, _ in PG_MIGRATIONS)
                if self._applied_version() != newest:
                    raise StoreError(
                        f"the store {redact(url)} needs an upgrade; run `aggregator update` once"
                    )
            else:
                self._migrate()
        except psycopg.Error as e:
            self.conn.close()
            raise StoreError(f"cannot open the store {redact(url)}: {_first_line(e)}") from None

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> None:
        psycopg = self._psycopg
        try:
            self.conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="aggregator",
            )
            self.conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            self.conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            if self.readonly:
                self.conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as e:
            raise StoreError(
                f"cannot connect to the PostgreSQL store {redact(self.url)}: "
                f"{_first_line(e)}; check the URL and that the server is running"
            ) from None
        self.db = _Connection(self.conn)

    def ensure_connected(self) -> bool:
        """Reconnect after the server closed the session (a restart, a terminated backend);
        a daemon calls this before each round. The clustering lock went with the session.
        Returns whether it reconnected."""
        if not (self.conn.closed or self.conn.broken):
            return False
        with contextlib.suppress(Exception):
            self.conn.close()
        self._leading = False
        self._connect()
        return True

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self):
        try:
            with self.conn.transaction():
                yield self.db
        except self._psycopg.errors.QueryCanceled as e:
            raise StoreError(f"the store {redact(self.url)} timed out: {_first_line(e)}") from None
        except self._psycopg.OperationalError as e:
            raise StoreError(
                f"the store {redact(self.url)} cannot be written: {_first_line(e)}"
            ) from None

    @contextmanager
    def batch(self):
        """Each write stays its own transaction. In one transaction, each would be a savepoint,
        which PostgreSQL makes a subtransaction: a batch of 64 feeds (two writes each) would
        overflow a backend's cache of 64 subtransaction ids, which slows every other session's
        snapshots while it lasts, and would hold its feeds' row locks until its end."""
        yield

    def _applied_version(self) -> int | None:
        exists = self.conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
        if exists is None:
            return None
        return self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    def _migrate(self) -> None:
        newest = max(v for v, _, _ in PG_MIGRATIONS)
        with self.conn.transaction():
            # Workers starting together: one migrates, the others wait and find it done.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':m'))")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            done = {r[0] for r in self.conn.execute("SELECT version FROM schema_migrations")}
            if done and max(done) > newest:
                raise StoreError(
                    f"the store {redact(self.url)} was written by a newer aggregator "
                    f"(schema {max(done)} > {newest}); upgrade aggregator"
                )
            for version, name, sql in PG_MIGRATIONS:
                if version in done:
                    continue
                self.conn.execute(sql)  # one script (no parameters: several statements)
                self.conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, extract(epoch from now()))",
                    (version, name),
                )

    def schema_version(self) -> int:
        return self._applied_version() or 0

    def stats(self) -> StoreStats:
        feeds = self.db.execute("SELECT count(*) FROM feeds").fetchone()[0]
        entries = self.db.execute("SELECT count(*) FROM entries").fetchone()[0]
        size = self.db.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ).fetchone()[0]
        return StoreStats(feeds=feeds, entries=entries, size_bytes=int(size or 0))

    def lead_clustering(self) -> bool:
        if self.readonly:
            return False
        if not self._leading:
            self._leading = bool(
                self.conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(current_schema() || ':cluster'))"
                ).fetchone()[0]
            )
            self.lead_term += self._leading
        return self._leading

    # -- clustering output in set-at-a-time statements ---------------------------------------------
    # The shared versions send one statement per row (fine in-process for SQLite) and an IN
    # list per 500 stories (which PostgreSQL answers with a scan of entries each time).

    def _assign(self, db, rows: list[tuple], story_ids: set[int], now_ts: int) -> None:
        if not rows:
            return
        db.execute(
            "INSERT INTO stories (id, created_at) SELECT unnest(?::bigint[]), ?"
            " ON CONFLICT DO NOTHING",
            (sorted(story_ids), now_ts),
        )
        sids, scores, reasons, eids = (list(col) for col in zip(*rows, strict=True))
        db.execute(
            "UPDATE entries SET story_id = u.sid, join_score = u.score, join_reason = u.reason"
            " FROM unnest(?::bigint[], ?::float8[], ?::text[], ?::bigint[])"
            " AS u(sid, score, reason, eid) WHERE entries.id = u.eid AND entries.story_id IS NULL",
            (sids, scores, reasons, eids),
        )

    def _refresh_stories(self, db, ids, now_ts: int) -> None:
        # (every story has its row: _assign inserted the new ones)
        ids = sorted(set(ids))
        if not ids:
            return
        db.execute(
            """
            WITH agg AS (
                SELECT story_id, count(*) AS n, count(DISTINCT feed_id) AS sources,
                       min(published) AS first, max(published) AS last
                FROM entries WHERE story_id = ANY(?::bigint[]) GROUP BY story_id
            ), rep AS (
                SELECT DISTINCT ON (story_id) story_id, id, title
                FROM entries WHERE story_id = ANY(?::bigint[])
                ORDER BY story_id, published, id
            )
            UPDATE stories SET entry_count = agg.n, source_count = agg.sources,
                first_seen = agg.first, last_updated = agg.last,
                rep_entry_id = rep.id, title = rep.title
            FROM agg JOIN rep ON rep.story_id = agg.story_id
            WHERE stories.id = agg.story_id
            """,
            (ids, ids),
        )
        db.execute(
            "DELETE FROM stories s WHERE s.id = ANY(?::bigint[])"
            " AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.story_id = s.id)",
            (ids,),
        )

    # -- search ---------------------------------------------------------------------------------

    def index_pending(
        self,
        pause: Callable[[], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        return 0  # the tsvector column is computed as rows are written

    def defer_indexes(self) -> bool:
        return False  # (a shared store: other workers write and read it meanwhile)

    def restore_indexes(self) -> None:
        pass

    def purge_search_index(self) -> None:
        pass  # index rows go with their entries

    def search(
        self,
        query: str,
        since: datetime | None = None,
        limit: int = 50,
        per_story: bool = False,
    ) -> list[SearchHit]:
        tsq = to_tsquery(query)
        params: list = [tsq]
        where = "e.search @@ q.q"
        cutoff = self.db.execute(
            "SELECT e.id FROM entries e, to_tsquery('simple', ?) q WHERE e.search @@ q"
            " ORDER BY e.id DESC OFFSET ? LIMIT 1",
            (tsq, RANKED_MATCHES - 1),
        ).fetchone()
        if cutoff is not None:
            where += " AND e.id >= ?"
            params.append(cutoff[0])
        if since is not None:
            where += " AND e.published >= ?"
            params.append(_ts(since))
        if not per_story:
            hits = f"""hits AS (
                    SELECT e.id, -ts_rank(e.search, q.q) AS rank, e.published
                    FROM entries e, q WHERE {where}
                    ORDER BY rank, e.published DESC, e.id DESC LIMIT ?
                )"""
        else:  # each story's best match, then the best ``limit`` of those
            hits = f"""firsts AS (
                    SELECT e.id, -ts_rank(e.search, q.q) AS rank, e.published,
                        row_number() OVER (
                            PARTITION BY e.story_id
                            ORDER BY -ts_rank(e.search, q.q), e.published DESC, e.id DESC
                        ) AS nth
                    FROM entries e, q WHERE {where} AND e.story_id IS NOT NULL
                ), hits AS (
                    SELECT id, rank, published FROM firsts WHERE nth = 1
                    ORDER BY rank, published DESC, id DESC LIMIT ?
                )"""
        params += [limit, tsq]
        try:
            rows = self.db.execute(
                f"""
                WITH q AS (SELECT to_tsquery('simple', ?) AS q),
                {hits}
                SELECT {ENTRY_COLUMNS},
                    ts_headline('simple', e.title || ' … ' || left(e.summary, 20000), q2.q,
                                '{HEADLINE}'),
                    hits.rank
                FROM hits JOIN entries e ON e.id = hits.id JOIN feeds f ON f.id = e.feed_id,
                    (SELECT to_tsquery('simple', ?) AS q) q2
                ORDER BY hits.rank, hits.published DESC, hits.id DESC
                """,
                params,
            ).fetchall()
        except self._psycopg.errors.SyntaxError as e:
            raise SearchSyntaxError(
                f"cannot read the search {query!r} ({_first_line(e)}); put phrases in double "
                "quotes and join words with AND, OR or NOT"
            ) from None
        return [SearchHit(entry=stored_entry(r), snippet=r[13], rank=r[14]) for r in rows]


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return re.sub(r"\s+", " ", text.splitlines()[0])
