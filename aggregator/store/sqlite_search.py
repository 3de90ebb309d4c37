"""Full-text search for SQLite (FTS5). Indexing is batched, not done by triggers (a trigger
makes every insert ~15x slower): after each round, entries whose ``last_changed`` is newer
than the last indexing run are (re)indexed in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from ..errors import SearchSyntaxError
from ..models import SearchHit
from ._rows import ENTRY_COLUMNS, stored_entry
from ._rows import ts as _ts

HIT_START, HIT_END = "\x02", "\x03"
RANK = "bm25(entries_fts, 10.0, 1.0)"  # a match in the title weighs ten times one in the summary
RANKED_MATCHES = 5000  # a search ranks this many of the newest matches
INDEX_TRANSACTION = 10_000  # entries indexed per transaction (~0.3 s of holding the lock)


class SearchMixin:
    db: sqlite3.Connection

    def index_pending(self) -> int:
        """(Re)index entries changed since the last run; returns how many. The newest second
        seen is looked at again next time, so that an entry changed later within that same
        second (by another process) is not missed: those of its entries whose indexed title
        and summary are still theirs are left as they are (a big round's last second held
        thousands, indexed again by every quiet round after it). One transaction per
        INDEX_TRANSACTION entries, so that another writer (the clustering stage, while a worker
        process indexes) never waits long; the mark moves only once all of them are in, so a
        crash midway means indexing those entries again, not missing them."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'fts_indexed_through'")
        mark = int(row.fetchone()[0])
        top = self.db.execute("SELECT max(last_changed) FROM entries").fetchone()[0]
        if top is None or top < mark:
            return 0
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM entries WHERE last_changed > ?"
                " UNION ALL"
                " SELECT e.id FROM entries e LEFT JOIN entries_fts f ON f.rowid = e.id"
                " WHERE e.last_changed = ? AND (f.rowid IS NULL OR f.title IS NOT e.title"
                " OR f.summary IS NOT e.summary)",
                (mark, mark),
            )
        ]
        for start in range(0, len(ids), INDEX_TRANSACTION):
            batch = ids[start : start + INDEX_TRANSACTION]
            with self._write() as db:
                for i in range(0, len(batch), 500):
                    chunk = batch[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    db.execute(f"DELETE FROM entries_fts WHERE rowid IN ({marks})", chunk)
                    db.execute(
                        f"INSERT INTO entries_fts (rowid, title, summary)"
                        f" SELECT id, title, summary FROM entries WHERE id IN ({marks})",
                        chunk,
                    )
        with self._write() as db:
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'fts_indexed_through'"
                " AND CAST(value AS INTEGER) < ?",
                (str(top), top),
            )
        return len(ids)

    def search(self, query: str, since: datetime | None = None, limit: int = 50) -> list[SearchHit]:
        if not getattr(self, "readonly", False):  # readers search what the writer indexed
            self.index_pending()
        sql = (
            f"SELECT {ENTRY_COLUMNS},"
            f" snippet(entries_fts, -1, '{HIT_START}', '{HIT_END}', '…', 16), {RANK}"
            " FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid"
            " JOIN feeds f ON f.id = e.feed_id WHERE entries_fts MATCH ?"
        )
        params: list = [query]
        # Rank the newest RANKED_MATCHES matches only: scoring every match of a common word in
        # a store of millions takes seconds, and a reader wants the recent ones. Rowids grow
        # with time and FTS5 walks them newest-first cheaply, so this costs one index scan.
        cutoff = self._rank_cutoff(query)
        if cutoff is not None:
            sql += " AND entries_fts.rowid >= ?"
            params.append(cutoff)
        if since is not None:
            sql += " AND e.published >= ?"
            params.append(_ts(since))
        sql += f" ORDER BY {RANK}, e.published DESC LIMIT ?"
        params.append(limit)
        try:
            rows = self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "fts5" in msg or "syntax" in msg or "no such column" in msg or "unterminated" in msg:
                raise SearchSyntaxError(
                    f"cannot read the search {query!r} ({msg}); put phrases in double quotes "
                    "and join words with AND, OR or NOT"
                ) from None
            raise
        return [
            SearchHit(
                entry=stored_entry(r),
                snippet=r[13],
                rank=r[14],
            )
            for r in rows
        ]

    def _rank_cutoff(self, query: str) -> int | None:
        try:
            row = self.db.execute(
                "SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?"
                " ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (query, RANKED_MATCHES - 1),
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # the main query reports the syntax error
        return row[0] if row else None

    def purge_search_index(self) -> None:
        """Drop index rows of entries that no longer exist (after retention or removals)."""
        with self._write() as db:
            db.execute("DELETE FROM entries_fts WHERE rowid NOT IN (SELECT id FROM entries)")

    def story_ids_for(self, entry_ids: Sequence[int]) -> dict[int, int | None]:
        if not entry_ids:
            return {}
        marks = ",".join("?" * len(entry_ids))
        return dict(
            self.db.execute(
                f"SELECT id, story_id FROM entries WHERE id IN ({marks})", list(entry_ids)
            )
        )
