"""Generate N realistic feeds for the peer benchmark: RSS 2.0 and Atom (alternating), 50 entries
each, titles of ~10 words, HTML descriptions of ~100 words, dates, GUIDs, and a share of entries
that are the same story told by several outlets (shared event words in the title).

    write_feeds(directory, n_feeds, entries=50, shared=0.3, seed=1) -> list of file names
    touch_feeds(directory, names, fraction, seed) -> the names rewritten with new entries
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

WORDS = (
    "government minister report market city police court company council people year week "
    "plan deal talks vote price growth health school water energy power state union workers "
    "group leader official data study project service support crisis record season team "
    "match win loss first final new major local national global public private security "
    "budget tax trade bank rate inflation jobs housing transport rail road airport port"
).split()
FILLER = (
    "the a of to in and for on with at from by as after over amid says said will "
    "could would has have was were is are its their"
).split()
START = datetime(2026, 11, 20, tzinfo=UTC)


def _name(rng: random.Random) -> str:
    return rng.choice("BCDFGHJKLMNPRSTVWZ") + "".join(
        rng.choice("aeiou") + rng.choice("bcdfghklmnprstvz") for _ in range(rng.randint(1, 3))
    )


class World:
    def __init__(self, seed: int, events: int = 2000):
        self.rng = random.Random(seed)
        self.events = [[_name(self.rng) for _ in range(3)] for _ in range(events)]
        # body text: a Zipf-distributed vocabulary of 5,000 words, as running text has
        vocab = WORDS + [_name(random.Random(seed + i)).lower() for i in range(5000)]
        self.vocab = vocab
        self.cum = []
        total = 0.0
        for i in range(len(vocab)):
            total += 1 / (i + 1)
            self.cum.append(total)

    def title(self, event: list[str] | None) -> str:
        rng = self.rng
        words = rng.sample(WORDS, 6) + rng.sample(FILLER, 2)
        if event:
            words += rng.sample(event, 2)
        else:
            words += [_name(rng), _name(rng)]
        rng.shuffle(words)
        return " ".join(words).capitalize()

    def description(self, title: str) -> str:
        rng = self.rng
        words = rng.choices(self.vocab, cum_weights=self.cum, k=70) + rng.choices(FILLER, k=20)
        rng.shuffle(words)
        body = " ".join(words)
        return (
            f'<p><b>{escape(title)}</b>. {body}.</p><p><a href="https://example.org/x">More</a></p>'
        )

    def entries(self, feed: int, n: int, shared: float, generation: int) -> list[dict]:
        out = []
        for j in range(n):
            event = self.rng.choice(self.events) if self.rng.random() < shared else None
            title = self.title(event)
            out.append(
                {
                    "guid": f"feed{feed}-g{generation}-{j}",
                    "title": title,
                    "link": f"https://outlet{feed}.example/{generation}/{j}?utm_source=rss",
                    "description": self.description(title),
                    "date": START
                    + timedelta(hours=generation * 24)
                    - timedelta(minutes=j * 17 + feed % 60),
                }
            )
        return out


def render(feed: int, entries: list[dict]) -> str:
    if feed % 2 == 0:
        items = "".join(
            f"<item><title>{escape(e['title'])}</title><link>{escape(e['link'])}</link>"
            f'<guid isPermaLink="false">{e["guid"]}</guid>'
            f"<pubDate>{format_datetime(e['date'], usegmt=True)}</pubDate>"
            f"<description>{escape(e['description'])}</description></item>"
            for e in entries
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>Outlet {feed}</title><link>https://outlet{feed}.example/</link>"
            f"<description>Benchmark feed {feed}</description>{items}</channel></rss>"
        )
    items = "".join(
        f'<entry><title>{escape(e["title"])}</title><link href="{escape(e["link"])}"/>'
        f"<id>urn:{e['guid']}</id><updated>{e['date'].isoformat()}</updated>"
        f'<summary type="html">{escape(e["description"])}</summary></entry>'
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Outlet {feed}</title><id>urn:outlet{feed}</id>"
        f'<updated>{START.isoformat()}</updated><link href="https://outlet{feed}.example/"/>'
        f"{items}</feed>"
    )


def write_feeds(
    directory: Path, n_feeds: int, entries: int = 50, shared: float = 0.3, seed: int = 1
) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    world = World(seed)
    names = []
    for i in range(n_feeds):
        name = f"feed{i}.{'xml' if i % 2 == 0 else 'atom'}"
        (directory / name).write_text(
            render(i, world.entries(i, entries, shared, 0)), encoding="utf-8"
        )
        names.append(name)
    return names


def touch_feeds(
    directory: Path, names: list[str], fraction: float, seed: int = 2, new: int = 5
) -> list[str]:
    """Put ``new`` fresh entries on top of ``fraction`` of the feeds (new ETag and mtime); the
    entries already there are left as they are."""
    rng = random.Random(seed)
    world = World(seed)
    chosen = rng.sample(names, max(1, int(len(names) * fraction)))
    for name in chosen:
        feed = int(name[4:].split(".")[0])
        path = directory / name
        text = path.read_text(encoding="utf-8")
        fresh = render(feed, world.entries(feed, new, 0.3, 1))
        if feed % 2 == 0:
            items = fresh[fresh.index("<item>") : fresh.rindex("</channel>")]
            at = text.index("<item>")
        else:
            items = fresh[fresh.index("<entry>") : fresh.rindex("</feed>")]
            at = text.index("<entry>")
        path.write_text(text[:at] + items + text[at:], encoding="utf-8")
    return chosen
