"""`aggregator demo`: the bundled demo feeds served on 127.0.0.1, one round into a fresh store,
and what was stored printed. No internet needed."""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO

from .api import Aggregator
from .config import Settings
from .render import render


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 (overrides the base class attribute)
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".xml": "application/rss+xml",
        ".atom": "application/atom+xml",
        ".rdf": "application/rdf+xml",
        ".json": "application/feed+json",
    }

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_directory(directory: Path):
    """A threaded HTTP server for ``directory`` on 127.0.0.1 (an ephemeral port)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo_feed_names() -> list[str]:
    root = resources.files("aggregator") / "demo_feeds"
    return sorted(
        p.name for p in root.iterdir() if p.name.split(".")[-1] in ("xml", "atom", "rdf", "json")
    )


def print_stories(agg: Aggregator, out: IO) -> None:
    """Every story, newest first, with each outlet that covered it."""
    rows = []
    for s in agg.stories(limit=1000):
        detail = agg.story(s.id)
        sources = "\n".join(f"{m.outlet}: {m.title}" for m in detail.members)
        rows.append(
            {
                "story": s.id,
                "updated": s.last_updated,
                "outlets": s.source_count,
                "title": s.title,
                "sources": sources,
            }
        )
    render(
        rows,
        "table",
        ("story", "updated", "outlets", "title", "sources"),
        out=out,
        title="Stories (one per event, with every outlet that covered it)",
    )


def run_demo(settings: Settings, keep: Path | None, out: IO) -> Aggregator:
    with (
        resources.as_file(resources.files("aggregator") / "demo_feeds") as directory,
        serve_directory(Path(directory)) as base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        db = keep or Path(tmp) / "demo.sqlite"
        agg = Aggregator.open(db=db, settings=settings)
        try:
            for name in demo_feed_names():
                agg.add_feed(f"{base}/{name}", check=False)
            summary = agg.update()
            out.write(f"demo store: {db if keep else '(temporary)'}\n")
            out.write(summary.line() + "\n\n")
            print_stories(agg, out)
        finally:
            agg.close()
    return agg
