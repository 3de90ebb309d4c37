"""Story storage: clustering input and output, story queries, manual corrections. Mixed into
SQLStore (both backends); uses its ``db`` connection and ``_write`` transaction helper."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from ..errors import ClusterConflictError, NotFoundError
from ..models import ClusterItem, Story, StoryDetail, StoryMember
from ._rows import dt as _dt
from ._rows import ts as _ts

_ITEM_COLS = "id, feed_id, url, title, summary, published, story_id"


def _item(r) -> ClusterItem:
    return ClusterItem(
        entry_id=r[0],
        feed_id=r[1],
        url=r[2],
        title=r[3],
        summary=r[4],
        published=_dt(r[5]),
        story_id=r[6],
    )


class StoryStoreMixin:
    db: object
    # Appended to a SELECT of rows the transaction will update (PostgreSQL: FOR UPDATE).
    _FOR_UPDATE = ""
    # Which index reads the queue of entries without a story (SQLite: its own, see there).
    _QUEUE_INDEX = ""

    # -- clustering input -------------------------------------------------------------------------

    def unclustered(self) -> list[ClusterItem]:
        """Entries without a story, in clustering order: the queue, whole."""
        return self.unclustered_items(self.unclustered_ids())

    def unclustered_ids(self) -> array:
        """The ids of the entries without a story, in clustering order: by time, then by feed,
        then as the feed lists them (by id: a feed's entries are written in one transaction),
        never by the order the feeds came in, so that the same entries make the same stories
        in every run. The clustering stage's queue, read once and then in batches
        (``unclustered_items``). An array of 64-bit integers (a list of a cold round's million
        would take 36 MB, this 8)."""
        return array(
            "q",
            (
                r[0]
                for r in self.db.execute(
                    f"SELECT id FROM entries{self._QUEUE_INDEX} WHERE story_id IS NULL"
                    " ORDER BY published, feed_id, id"
                )
            ),
        )

    def unclustered_items(self, ids: Sequence[int]) -> list[ClusterItem]:
        """Those of these entries that are still without a story (none placed or removed them
        since), in the order given."""
        rows: dict[int, tuple] = {}
        # read in id order, 500 neighbours at a time: the ids given are in clustering order
        # (by time), their rows in arrival order, and 500 of them at random read 500 places
        # of the table (the 5000-feed bench's queue, 10,000 at a time, its SELECTs alone
        # timed: 3.5 us an entry that way, 2.4 us this way)
        order = sorted(ids)
        for i in range(0, len(order), 500):
            chunk = order[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(
                f"SELECT {_ITEM_COLS} FROM entries WHERE id IN ({marks}) AND story_id IS NULL",
                chunk,
            ):
                rows[r[0]] = r
        return [_item(rows[i]) for i in ids if i in rows]

    def clustered_since(self, since: datetime, chunk: int = 5_000) -> Iterator[ClusterItem]:
        """Entries already in stories, published since ``since``, in clustering order. Read
        ``chunk`` rows at a time (the window can hold hundreds of thousands of entries, and
        their summaries, which the caller only needs one at a time)."""
        first = (
            f"SELECT {_ITEM_COLS} FROM entries WHERE story_id IS NOT NULL AND published >= ?"
            f" ORDER BY published, id LIMIT {int(chunk)}"
        )
        after = (
            f"SELECT {_ITEM_COLS} FROM entries WHERE story_id IS NOT NULL AND published >= ?"
            f" AND (published > ? OR (published = ? AND id > ?))"
            f" ORDER BY published, id LIMIT {int(chunk)}"
        )
        # (in a store where no entry has a story yet, the window's scan would read every one
        # of them for none: 0.6 s in the 5000-feed bench's cold round. Its index of clustered
        # entries says so at once)
        if self.db.execute("SELECT 1 FROM entries WHERE story_id IS NOT NULL LIMIT 1").fetchone():
            rows = self.db.execute(first, (_ts(since),)).fetchall()
        else:
            rows = []
        while rows:
            yield from map(_item, rows)
            if len(rows) < chunk:
                return
            last = rows[-1]
            key = (_ts(since), last[5], last[5], last[0])
            rows = self.db.execute(after, key).fetchall()

    def story_blocks(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self.db.execute("SELECT a, b FROM story_blocks")]

    def story_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM stories").fetchone()[0]

    def next_story_id(self) -> int:
        return (self.db.execute("SELECT max(id) FROM stories").fetchone()[0] or 0) + 1

    def cluster_generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'cluster_generation'").fetchone()
        return int(row[0]) if row else 0

    def cluster_fingerprint(self) -> tuple:
        # over the clustered entries (a scan of a partial index): a new placement raises the
        # count, a merge or a move changes the sum of story ids, a removal lowers the count
        row = self.db.execute(
            "SELECT count(*), coalesce(max(id), 0), coalesce(sum(story_id), 0),"
            " coalesce(sum(id), 0) FROM entries WHERE story_id IS NOT NULL"
        ).fetchone()
        return (self.cluster_generation(), *(int(v) for v in row))

    def cluster_snapshot_path(self) -> Path | None:
        return None

    # -- clustering output ------------------------------------------------------------------------

    def apply_clustering(
        self,
        assignments: Iterable[tuple[int, int, float, str]],
        merges: Sequence[tuple[int, int]],
        now: datetime,
        generation: int | None = None,
    ) -> set[int]:
        """In one transaction: set (entry_id, story_id, score, reason) for unclustered entries,
        fold merged stories (gone, keep) into their survivors, refresh story aggregates.
        Returns the ids of the stories touched. With ``generation``, refuses
        (ClusterConflictError, nothing written) when a correction changed the stories since
        the caller's clusterer was built from them."""
        now_ts = _ts(now)
        touched: set[int] = set()
        with self._write() as db:
            current = self._lock_generation(db)
            if generation is not None and current != generation:
                raise ClusterConflictError(
                    f"stories changed meanwhile (generation {current}, expected {generation})"
                )
            # by entry id (clustering order is by time: the updates hopped between pages; 8%
            # less time writing the bench's 50,500 assignments 10,000 at a time)
            rows = [(sid, score, reason, eid) for eid, sid, score, reason in sorted(assignments)]
            touched.update(r[0] for r in rows)
            self._assign(db, rows, touched, now_ts)
            for gone, keep in merges:
                db.execute(
                    "INSERT INTO stories (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (keep, now_ts),
                )
                db.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (keep, gone))
                db.execute("DELETE FROM stories WHERE id = ?", (gone,))
                _move_blocks(db, gone, keep)
                touched.discard(gone)
                touched.add(keep)
            self._refresh_stories(db, touched, now_ts)
        return touched

    def _assign(self, db, rows: list[tuple], story_ids: set[int], now_ts: int) -> None:
        """Put the entries in their stories: rows of (story_id, score, reason, entry_id). The
        stories' rows are written by ``_refresh_stories`` next (created there if new)."""
        db.executemany(
            "UPDATE entries SET story_id = ?, join_score = ?, join_reason = ?"
            " WHERE id = ? AND story_id IS NULL",
            rows,
        )

    def _refresh_stories(self, db, ids: Iterable[int], now_ts: int) -> None:
        """Recompute counts, span and representative (earliest member) of the given stories,
        creating those that have entries and no row yet (made at ``now_ts``); delete the ones
        left empty."""
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            # One write per story, its aggregates from one search of the entries_story index
            # (covering) and its earliest member from another. A new story's row used to be
            # inserted empty and then updated, which wrote it, and its place in
            # stories_last_updated, twice: writing the bench's 50,500 assignments 10,000 at a
            # time took 1.01-1.28 s of CPU that way, 0.82-1.10 s this way (four alternating
            # runs each). (A join of two aggregates of the chunk was planned as a nested scan:
            # 24 ms a chunk vs 9 ms for the per-story searches, 9 s of a 250,000-entry round.)
            db.execute(
                f"""
                INSERT INTO stories (id, created_at, entry_count, source_count, first_seen,
                                     last_updated, rep_entry_id, title)
                SELECT a.story_id, ?, a.n, a.sources, a.first, a.last, r.id, r.title
                FROM (
                    SELECT story_id, count(*) AS n, count(DISTINCT feed_id) AS sources,
                           min(published) AS first, max(published) AS last
                    FROM entries WHERE story_id IN ({marks}) GROUP BY story_id
                ) AS a
                JOIN entries r ON r.id = (
                    SELECT id FROM entries WHERE story_id = a.story_id
                    ORDER BY published, id LIMIT 1)
                WHERE true
                ON CONFLICT (id) DO UPDATE SET
                    entry_count = excluded.entry_count, source_count = excluded.source_count,
                    first_seen = excluded.first_seen, last_updated = excluded.last_updated,
                    rep_entry_id = excluded.rep_entry_id, title = excluded.title
                """,
                [now_ts, *chunk],
            )
            db.execute(
                f"DELETE FROM stories WHERE id IN ({marks})"
                " AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.story_id = stories.id)",
                chunk,
            )

    # -- queries ----------------------------------------------------------------------------------

    _STORY_COLS = (
        "s.id, s.title, s.first_seen, s.last_updated, s.entry_count, s.source_count, s.rep_entry_id"
    )

    @staticmethod
    def _story(r) -> Story:
        return Story(
            id=r[0],
            title=r[1],
            first_seen=_dt(r[2]),
            last_updated=_dt(r[3]),
            entry_count=r[4],
            source_count=r[5],
            rep_entry_id=r[6],
        )

    def stories(
        self,
        since: datetime | None = None,
        min_sources: int = 1,
        feed_ids: Sequence[int] | None = None,
        search: str | None = None,
        limit: int = 50,
    ) -> list[Story]:
        where, params = ["s.source_count >= ?"], [min_sources]
        if since is not None:
            where.append("s.last_updated >= ?")
            params.append(_ts(since))
        if feed_ids:
            marks = ",".join("?" * len(feed_ids))
            where.append(
                "EXISTS (SELECT 1 FROM entries e WHERE e.story_id = s.id"
                f" AND e.feed_id IN ({marks}))"
            )
            params.extend(feed_ids)
        if search:
            where.append(
                "EXISTS (SELECT 1 FROM entries e WHERE e.story_id = s.id"
                f" AND (e.title {self._LIKE} ? ESCAPE '\\'"
                f" OR e.summary {self._LIKE} ? ESCAPE '\\'))"
            )
            pattern = "%" + like_escape(search) + "%"
            params.extend([pattern, pattern])
        sql = (
            f"SELECT {self._STORY_COLS} FROM stories s WHERE {' AND '.join(where)}"
            " ORDER BY s.last_updated DESC, s.id DESC LIMIT ?"
        )
        params.append(limit)
        return [self._story(r) for r in self.db.execute(sql, params)]

    def story(self, story_id: int) -> StoryDetail:
        row = self.db.execute(
            f"SELECT {self._STORY_COLS} FROM stories s WHERE s.id = ?", (story_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no story {story_id}; see `aggregator stories`")
        members = tuple(
            StoryMember(
                entry_id=r[0],
                feed_id=r[1],
                outlet=r[2],
                title=r[3],
                link=r[4],
                url=r[5],
                published=_dt(r[6]),
                score=r[7],
                reason=r[8],
                pinned=bool(r[9]),
            )
            for r in self.db.execute(
                "SELECT e.id, e.feed_id, coalesce(f.user_title, f.title, f.url), e.title,"
                " e.link, e.url,"
                " e.published, e.join_score, e.join_reason, e.pinned"
                " FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?"
                " ORDER BY e.published, e.id",
                (story_id,),
            )
        )
        return StoryDetail(self._story(row), members)

    def entry_item(self, entry_id: int) -> ClusterItem:
        row = self.db.execute(
            f"SELECT {_ITEM_COLS} FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no entry {entry_id}; see `aggregator entries`")
        return _item(row)

    # -- manual corrections -----------------------------------------------------------------------

    def _lock_generation(self, db) -> int:
        """The correction counter, locked until the transaction ends: story writes serialize."""
        row = db.execute(
            f"SELECT value FROM meta WHERE key = 'cluster_generation'{self._FOR_UPDATE}"
        ).fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self, db) -> None:
        db.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
            " WHERE key = 'cluster_generation'"
        )

    def _record(self, db, kind: str, story_id, other, entry_ids, now: datetime) -> None:
        db.execute(
            "INSERT INTO corrections (kind, story_id, other_story_id, entry_ids, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, story_id, other, json.dumps(list(entry_ids)), _ts(now)),
        )
        self._bump_generation(db)

    def merge_stories(self, keep: int, gone: int, now: datetime) -> None:
        if keep == gone:
            raise NotFoundError("a story cannot be merged with itself")
        self.story(keep)
        self.story(gone)
        with self._write() as db:
            self._lock_generation(db)
            db.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (keep, gone))
            db.execute(
                "DELETE FROM story_blocks WHERE (a = ? AND b = ?) OR (a = ? AND b = ?)",
                (keep, gone, gone, keep),
            )
            _move_blocks(db, gone, keep)
            db.execute("DELETE FROM stories WHERE id = ?", (gone,))
            self._refresh_stories(db, [keep], _ts(now))
            self._record(db, "merge", keep, gone, [], now)

    def split_story(self, story_id: int, entry_ids: Sequence[int], now: datetime) -> int:
        """Move ``entry_ids`` out of ``story_id`` into one new story; the two never auto-merge."""
        detail = self.story(story_id)
        members = {m.entry_id for m in detail.members}
        missing = [e for e in entry_ids if e not in members]
        if missing:
            raise NotFoundError(f"entries {missing} are not in story {story_id}")
        if len(set(entry_ids)) == len(members):
            raise NotFoundError(
                f"that would move every entry of story {story_id}; nothing to split"
            )
        with self._write() as db:
            self._lock_generation(db)
            new_id = (db.execute("SELECT max(id) FROM stories").fetchone()[0] or 0) + 1
            db.execute("INSERT INTO stories (id, created_at) VALUES (?, ?)", (new_id, _ts(now)))
            db.executemany(
                "UPDATE entries SET story_id = ?, pinned = 1, join_score = NULL,"
                " join_reason = 'moved by hand' WHERE id = ?",
                [(new_id, e) for e in entry_ids],
            )
            db.execute(
                "INSERT INTO story_blocks (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (min(story_id, new_id), max(story_id, new_id)),
            )
            self._refresh_stories(db, [story_id, new_id], _ts(now))
            self._record(db, "split", story_id, new_id, entry_ids, now)
        return new_id

    def detach_entry(self, entry_id: int, now: datetime) -> int:
        item = self.entry_item(entry_id)
        if item.story_id is None:
            raise NotFoundError(f"entry {entry_id} is not in a story yet; run `aggregator update`")
        if self.story(item.story_id).story.entry_count == 1:
            raise NotFoundError(f"entry {entry_id} is already alone in story {item.story_id}")
        return self.split_story(item.story_id, [entry_id], now)


def _move_blocks(db, gone: int, keep: int) -> None:
    """Story ``gone`` is folded into ``keep``: its "never merge" pairs now hold for ``keep``."""
    db.execute(
        "INSERT INTO story_blocks (a, b)"
        " SELECT CASE WHEN a = ? THEN CAST(? AS BIGINT) ELSE a END,"
        " CASE WHEN b = ? THEN CAST(? AS BIGINT) ELSE b END"
        " FROM story_blocks WHERE a = ? OR b = ? ON CONFLICT DO NOTHING",
        (gone, keep, gone, keep, gone, gone),
    )
    db.execute("DELETE FROM story_blocks WHERE a = ? OR b = ? OR a = b", (gone, gone))


def like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern written with ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
