"""Merged stories out: Atom 1.0 (feedgen) and JSON Feed 1.1, one item per story listing every
source with its link. Pure: takes the stories and their members, returns text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape

from ._version import __version__
from .models import StoryDetail

TITLE = "aggregator: merged stories"


def web_url(url: str | None) -> bool:
    """Only http(s) links are ever written into HTML (never javascript:, data:, ...)."""
    return bool(url) and url.strip().lower().startswith(("http://", "https://"))


def _source_li(m) -> str:
    url = m.link or m.url
    title = escape(m.title)
    label = f'<a href="{escape(url, quote=True)}">{title}</a>' if web_url(url) else title
    return f"<li>{label} ({escape(m.outlet)}, {m.published:%Y-%m-%d %H:%M} UTC)</li>"


def _sources_html(d: StoryDetail) -> str:
    items = "".join(_source_li(m) for m in d.members)
    n = d.story.source_count
    return f"<p>{n} source{'s' if n != 1 else ''}:</p><ul>{items}</ul>"


def _rep_link(d: StoryDetail) -> str | None:
    rep = next((m for m in d.members if m.entry_id == d.story.rep_entry_id), None)
    rep = rep or (d.members[0] if d.members else None)
    link = (rep.link or rep.url) if rep else None
    return link if web_url(link) else None


def stories_atom(details: Sequence[StoryDetail], now: datetime, self_url: str) -> str:
    from feedgen.feed import FeedGenerator

    fg = FeedGenerator()
    fg.id(self_url)
    fg.title(TITLE)
    fg.link(href=self_url, rel="self")
    fg.updated(max((d.story.last_updated for d in details), default=now))
    fg.generator("aggregator", version=__version__)
    for d in reversed(details):  # feedgen prepends: keep newest first in the document
        s = d.story
        fe = fg.add_entry()
        fe.id(f"urn:aggregator:story:{s.id}")
        fe.title(s.title or f"Story {s.id}")
        fe.published(s.first_seen)
        fe.updated(s.last_updated)
        link = _rep_link(d)
        if link:
            fe.link(href=link, rel="alternate")
        # Every source, with its link, is in the content. (feedgen 1.0.0 drops the rel of
        # extra entry links, so rel="related" links would come out as duplicate alternates.)
        fe.content(_sources_html(d), type="html")
    return fg.atom_str(pretty=True).decode("utf-8")


def stories_jsonfeed(details: Sequence[StoryDetail], now: datetime, self_url: str) -> str:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/); sources in ``_aggregator``."""
    items = []
    for d in details:
        s = d.story
        item = {
            "id": f"urn:aggregator:story:{s.id}",
            "title": s.title or f"Story {s.id}",
            "content_html": _sources_html(d),
            "date_published": s.first_seen.isoformat(),
            "date_modified": s.last_updated.isoformat(),
            "_aggregator": {
                "story_id": s.id,
                "source_count": s.source_count,
                "sources": [
                    {
                        "outlet": m.outlet,
                        "title": m.title,
                        "url": (m.link or m.url) if web_url(m.link or m.url) else None,
                        "published": m.published.isoformat(),
                    }
                    for m in d.members
                ],
            },
        }
        link = _rep_link(d)
        if link:
            item["url"] = link
        items.append(item)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": TITLE,
        "feed_url": self_url,
        "items": items,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)
