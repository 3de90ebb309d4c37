"""Full-text search for SQLite (FTS5, reading its text from ``entries``). Indexing is batched,
not done by a trigger on insert (that makes every insert ~15x slower): after each round, the
entries changed since the last indexing run that are not in the index are indexed, in
transactions of INDEX_TRANSACTION. Triggers only take entries out (a title or summary
changed, an entry deleted), which is rare."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
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

    # an indexing run that paused (``index_pending``'s ``pause``): (the ids to index, how many
    # of them are done, the mark to set once all are)
    _index_run: tuple[list[int], int, int] | None = None

    def index_pending(
        self,
        pause: Callable[[], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int | None:
        """Index the entries that are not in the full-text index; returns how many. An entry
        is in it exactly when ``entries_fts_docsize`` has its row: the index reads its text
        from ``entries`` (external content, migration 9), and the store's triggers take an
        entry out, with the text it was indexed with, when its title or summary changes or it
        is deleted. Only entries changed since the last run's mark are looked at; the newest
        second seen is looked at again next time (another process may still write in it),
        and what is in the index already is left as it is. One transaction per
        INDEX_TRANSACTION entries, so that another writer (the clustering stage, while a
        worker process indexes) never waits long; the mark moves only once all of them are
        in, so a crash midway means looking at those entries again, not missing them.

        ``pause`` is asked between chunks of 500 entries: when it says so, what is indexed is
        committed and the run stops, returning None; the next call goes on where it stopped
        (a round's worker lets the clustering stage's other work go first, see
        pipeline.Offload). ``progress`` is told how many entries are left to look at: once the
        run knows them, then after each chunk."""
        if self._index_run is None:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'fts_indexed_through'")
            mark = int(row.fetchone()[0])
            top = self.db.execute("SELECT max(last_changed) FROM entries").fetchone()[0]
            if top is None or top < mark:
                return 0
            ids = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM entries e WHERE last_changed >= ?"
                    " AND NOT EXISTS (SELECT 1 FROM entries_fts_docsize d WHERE d.id = e.id)",
                    (mark,),
                )
            ]
            self._index_run = (ids, 0, top)
        ids, at, top = self._index_run
        self._index_run = None
        indexed = 0
        if progress is not None:
            progress(len(ids) - at)
        while at < len(ids):
            batch = ids[at : at + INDEX_TRANSACTION]
            paused = False
            with self._write() as db:
                for i in range(0, len(batch), 500):
                    chunk = batch[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    # (those another process indexed since they were read are in already:
                    # indexed twice, an entry's words would count twice)
                    indexed += db.execute(
                        f"INSERT INTO entries_fts (rowid, title, summary)"
                        f" SELECT id, title, summary FROM entries e WHERE id IN ({marks})"
                        " AND NOT EXISTS (SELECT 1 FROM entries_fts_docsize d WHERE d.id = e.id)",
                        chunk,
                    ).rowcount
                    at += len(chunk)
                    if progress is not None:
                        progress(len(ids) - at)
                    if pause is not None and at < len(ids) and pause():
                        paused = True
                        break
            if paused:
                self._index_run = (ids, at, top)
                return None
        with self._write() as db:
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'fts_indexed_through'"
                " AND CAST(value AS INTEGER) < ?",
                (str(top), top),
            )
        return indexed

    def search(
        self,
        query: str,
        since: datetime | None = None,
        limit: int = 50,
        per_story: bool = False,
    ) -> list[SearchHit]:
        if not getattr(self, "readonly", False):  # readers search what the writer indexed
            self.index_pending()
        snippet = f"snippet(entries_fts, -1, '{HIT_START}', '{HIT_END}', '…', 16)"
        where = "entries_fts MATCH ?"
        params: list = [query]
        # Rank the newest RANKED_MATCHES matches only: scoring every match of a common word in
        # a store of millions takes seconds, and a reader wants the recent ones. Rowids grow
        # with time and FTS5 walks them newest-first cheaply, so this costs one index scan.
        cutoff = self._rank_cutoff(query)
        if cutoff is not None:
            where += " AND entries_fts.rowid >= ?"
            params.append(cutoff)
        if since is not None:
            where += " AND e.published >= ?"
            params.append(_ts(since))
        if not per_story:
            sql = (
                f"SELECT {ENTRY_COLUMNS}, {snippet}, {RANK}"
                " FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid"
                f" JOIN feeds f ON f.id = e.feed_id WHERE {where}"
                f" ORDER BY {RANK}, e.published DESC LIMIT ?"
            )
            params.append(limit)
        else:
            # Each story's best match among the ranked ones, then the best ``limit`` of those;
            # the snippet is made for those only (the outer MATCH finds each by its rowid).
            sql = f"""
                WITH hits AS (
                    SELECT entries_fts.rowid AS id, {RANK} AS rank, e.published AS published,
                        e.story_id AS story_id
                    FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid
                    WHERE {where} AND e.story_id IS NOT NULL
                ), firsts AS (
                    SELECT id, rank, published, row_number() OVER (
                        PARTITION BY story_id ORDER BY rank, published DESC, id DESC
                    ) AS nth FROM hits
                ), best AS (
                    SELECT id, rank, published FROM firsts WHERE nth = 1
                    ORDER BY rank, published DESC, id DESC LIMIT ?
                )
                SELECT {ENTRY_COLUMNS}, {snippet}, best.rank
                FROM best JOIN entries_fts ON entries_fts.rowid = best.id
                JOIN entries e ON e.id = best.id JOIN feeds f ON f.id = e.feed_id
                WHERE entries_fts MATCH ?
                ORDER BY best.rank, best.published DESC, best.id DESC"""
            params += [limit, query]
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
        """Nothing to do here: the store's trigger takes an entry out of the index as it is
        deleted (an external-content index cannot drop a row whose text is gone)."""

    def story_ids_for(self, entry_ids: Sequence[int]) -> dict[int, int | None]:
        if not entry_ids:
            return {}
        marks = ",".join("?" * len(entry_ids))
        return dict(
            self.db.execute(
                f"SELECT id, story_id FROM entries WHERE id IN ({marks})", list(entry_ids)
            )
        )
