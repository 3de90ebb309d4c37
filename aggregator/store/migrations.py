"""Numbered schema migrations, applied in order and recorded in ``schema_migrations``.
Append only: a released migration is never edited, so a newer version opens an older file."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "feeds and entries",
        """
        CREATE TABLE feeds (
            id               INTEGER PRIMARY KEY,
            url              TEXT NOT NULL UNIQUE,
            title            TEXT,
            user_title       TEXT,
            site_url         TEXT,
            added_at         INTEGER NOT NULL,
            etag             TEXT,
            last_modified    TEXT,
            body_hash        TEXT,
            last_status      TEXT,
            last_http_status INTEGER,
            last_error       TEXT,
            last_fetched_at  INTEGER,
            last_ok_at       INTEGER,
            error_since      INTEGER,
            retry_after      INTEGER,
            gone             INTEGER NOT NULL DEFAULT 0,
            previous_urls    TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE entries (
            id           INTEGER PRIMARY KEY,
            feed_id      INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
            key          TEXT NOT NULL,
            guid         TEXT,
            url          TEXT,
            link         TEXT,
            title        TEXT NOT NULL,
            summary      TEXT NOT NULL,
            summary_html TEXT,
            author       TEXT,
            published    INTEGER NOT NULL,
            updated      INTEGER,
            first_seen   INTEGER NOT NULL,
            last_changed INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            story_id     INTEGER,
            UNIQUE (feed_id, key)
        );
        CREATE INDEX entries_published ON entries (published DESC, id DESC);
        CREATE INDEX entries_feed_published ON entries (feed_id, published DESC);
        CREATE INDEX entries_url ON entries (url) WHERE url IS NOT NULL;
        CREATE INDEX entries_story ON entries (story_id) WHERE story_id IS NOT NULL;
        """,
    ),
]

MIGRATIONS.append(
    (
        2,
        "stories, corrections",
        """
        CREATE TABLE stories (
            id           INTEGER PRIMARY KEY,
            title        TEXT NOT NULL DEFAULT '',
            rep_entry_id INTEGER,
            first_seen   INTEGER NOT NULL DEFAULT 0,
            last_updated INTEGER NOT NULL DEFAULT 0,
            entry_count  INTEGER NOT NULL DEFAULT 0,
            source_count INTEGER NOT NULL DEFAULT 0,
            created_at   INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX stories_last_updated ON stories (last_updated DESC, id DESC);
        ALTER TABLE entries ADD COLUMN join_score REAL;
        ALTER TABLE entries ADD COLUMN join_reason TEXT;
        ALTER TABLE entries ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX entries_unclustered ON entries (published, id) WHERE story_id IS NULL;
        CREATE TABLE story_blocks (
            a INTEGER NOT NULL,
            b INTEGER NOT NULL,
            PRIMARY KEY (a, b)
        );
        CREATE TABLE corrections (
            id             INTEGER PRIMARY KEY,
            kind           TEXT NOT NULL,
            story_id       INTEGER,
            other_story_id INTEGER,
            entry_ids      TEXT NOT NULL DEFAULT '[]',
            created_at     INTEGER NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('cluster_generation', '0')
        """,
    )
)

MIGRATIONS.append(
    (
        3,
        "scheduling",
        """
        ALTER TABLE feeds ADD COLUMN next_check_at INTEGER;
        ALTER TABLE feeds ADD COLUMN consecutive_errors INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE feeds ADD COLUMN disabled_reason TEXT;
        ALTER TABLE feeds ADD COLUMN disabled_at INTEGER;
        ALTER TABLE feeds ADD COLUMN feed_interval_minutes INTEGER;
        ALTER TABLE feeds ADD COLUMN schedule_reason TEXT;
        CREATE INDEX feeds_next_check ON feeds (next_check_at)
            WHERE gone = 0 AND disabled_reason IS NULL
        """,
    )
)

MIGRATIONS.append(
    (
        4,
        "full-text search",
        """
        CREATE VIRTUAL TABLE entries_fts USING fts5(
            title, summary, tokenize = 'unicode61 remove_diacritics 2'
        );
        INSERT OR IGNORE INTO meta VALUES ('fts_indexed_through', '0')
        """,
    )
)

MIGRATIONS.append(
    (
        5,
        "index for the full-text indexer",
        """
        CREATE INDEX entries_last_changed ON entries (last_changed)
        """,
    )
)

MIGRATIONS.append(
    (
        6,
        "feed leases",
        """
        ALTER TABLE feeds ADD COLUMN lease_owner TEXT;
        ALTER TABLE feeds ADD COLUMN lease_until INTEGER
        """,
    )
)

# FTS5 merges a level's segments once `automerge` of them are there: 4 by default. At 16 it
# merges less often while indexing, at the cost of more segments for a search to read. Indexing
# the bench's 50,500 entries (index_pending, a fresh index, three runs each): 1.64-1.84 s of CPU
# at 4, 1.08-1.16 s at 16. Searching `budget` in a store of 1,000,000 entries (gen_store.py
# --query, in-process medians): 30.5-31.1 ms at 4, 37.7-40.3 ms at 16.
MIGRATIONS.append(
    (
        7,
        "full-text index merges segments 16 at a time",
        """
        INSERT INTO entries_fts (entries_fts, rank) VALUES ('automerge', 16)
        """,
    )
)

# The queue of entries without a story, indexed in the order entries are written (by id) rather
# than in clustering order (published, id): a round writes its entries in the order its feeds
# come in, so an index in clustering order took each insert at a random place, and each
# transaction's commit logged a page of it per entry. The clustering stage reads the queue's ids
# in clustering order once (store.unclustered_ids: SQLite sorts them) and then its entries by id.
# Writing the 5000-feed bench's 252,500 entries 8 feeds a transaction (all indexes, two runs
# each): 8.65-8.71 s of CPU with the old index, 5.96-6.09 s with this one.
MIGRATIONS.append(
    (
        8,
        "queue of entries without a story in the order they are written",
        """
        DROP INDEX entries_unclustered;
        CREATE INDEX entries_queue ON entries (id, published) WHERE story_id IS NULL
        """,
    )
)

# The full-text index reads its text from `entries` (FTS5's external content) instead of
# keeping a copy of every title and summary: the copy was 39.5 MB of the bench's 177.8 MB
# 1000-feed store, and writing it a third of what indexing wrote. An external-content index
# must be told what it held when a row leaves it, so two triggers take an entry out, with the
# text it was indexed with, when its title or summary changes or it is deleted; an entry is
# in the index exactly when `entries_fts_docsize` has its row (store.index_pending puts back
# what changed). Indexing the bench's 50,500 entries (10,000 a transaction, twice each): 0.90-
# 0.93 s of CPU into the old table, 0.75-0.80 s into this one; the index 61.5 MB -> 22.0 MB.
# The index is rebuilt by the next index_pending (a round's, or a search's).
MIGRATIONS.append(
    (
        9,
        "full-text index reads the entries' own text",
        """
        DROP TABLE entries_fts;
        CREATE VIRTUAL TABLE entries_fts USING fts5(
            title, summary, content = 'entries', content_rowid = 'id',
            tokenize = 'unicode61 remove_diacritics 2'
        );
        INSERT INTO entries_fts (entries_fts, rank) VALUES ('automerge', 16);
        CREATE TRIGGER entries_fts_changed AFTER UPDATE OF title, summary ON entries
            WHEN (old.title IS NOT new.title OR old.summary IS NOT new.summary)
            AND EXISTS (SELECT 1 FROM entries_fts_docsize WHERE id = old.id)
        BEGIN
            INSERT INTO entries_fts (entries_fts, rowid, title, summary)
            VALUES ('delete', old.id, old.title, old.summary);
        END;
        CREATE TRIGGER entries_fts_deleted AFTER DELETE ON entries
            WHEN EXISTS (SELECT 1 FROM entries_fts_docsize WHERE id = old.id)
        BEGIN
            INSERT INTO entries_fts (entries_fts, rowid, title, summary)
            VALUES ('delete', old.id, old.title, old.summary);
        END;
        UPDATE meta SET value = '0' WHERE key = 'fts_indexed_through'
        """,
    )
)

# The index of entries by story carries what a story's aggregates are computed from (its
# members' times, ids and feeds): refreshing a written batch's stories (apply_clustering's
# _refresh_stories: count, sources, first and last time, earliest member) reads the index
# alone instead of each member's row, a random read in the table of wide rows. Writing the
# 5000-feed bench's 252,500 assignments 30,000 at a time (the worker's writes at that size):
# 7.42 / 7.46 s before, 5.11 / 5.16 s after; the 1000-feed bench's 50,500, 10,000 at a time:
# 0.99 / 1.01 s, 0.81 / 0.83 s.
MIGRATIONS.append(
    (
        10,
        "index of entries by story covers the stories' aggregates",
        """
        DROP INDEX entries_story;
        CREATE INDEX entries_story ON entries (story_id, published, id, feed_id)
            WHERE story_id IS NOT NULL
        """,
    )
)

# The index of entries by URL was never read: no query looks an entry up by its URL (a story's
# same-URL layer is the clusterer's own map, in memory). Every entry written updated it, at a
# random place: writing the 1000-feed bench's 50,500 entries as a round's worker does
# (bench/write_entries.py, five alternating pairs), medians 0.96 s of CPU with it, 0.87 s
# without; it was 2.1 MB of that store.
MIGRATIONS.append((11, "no index of entries by URL", "DROP INDEX IF EXISTS entries_url"))

# The clustering order breaks ties of time by feed, then by id (the order a feed lists its
# entries, written in one transaction): by id alone, entries published at the same time went in
# the order their feeds' fetches happened to end, and a round over the same feeds could make
# slightly different stories from one run to the next. The queue's index carries the feed, so
# that reading the queue in that order still reads the index alone (the 1000-feed bench's
# 50,500 entries: 30 ms either way; 44 ms reading each entry's feed from its row).
MIGRATIONS.append(
    (
        12,
        "queue of entries without a story carries their feed",
        """
        DROP INDEX entries_queue;
        CREATE INDEX entries_queue ON entries (id, published, feed_id) WHERE story_id IS NULL
        """,
    )
)
