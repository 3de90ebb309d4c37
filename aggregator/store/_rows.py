"""Row <-> value helpers shared by the SQLite store modules."""

from __future__ import annotations

from datetime import UTC, datetime

from ..models import StoredEntry

# The columns a StoredEntry is read from, with entries aliased `e` and feeds aliased `f`.
ENTRY_COLUMNS = (
    "e.id, e.feed_id, coalesce(f.user_title, f.title, f.url), e.key, e.url, e.link,"
    " e.title, e.summary, e.author, e.published, e.updated, e.first_seen, e.story_id"
)


def ts(dt: datetime | None) -> int | None:
    """UTC datetime -> integer epoch seconds (how the store keeps time)."""
    return None if dt is None else int(dt.timestamp())


def dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def stored_entry(r) -> StoredEntry:
    """A StoredEntry from the first columns of a row selected with ENTRY_COLUMNS."""
    return StoredEntry(
        id=r[0],
        feed_id=r[1],
        feed_title=r[2],
        key=r[3],
        url=r[4],
        link=r[5],
        title=r[6],
        summary=r[7],
        author=r[8],
        published=dt(r[9]),
        updated=dt(r[10]),
        first_seen=dt(r[11]),
        story_id=r[12],
    )
