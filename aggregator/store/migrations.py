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
