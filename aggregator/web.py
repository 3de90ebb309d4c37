"""`aggregator serve`: a small read-only web app (Starlette) over the store.

    /                     stories, newest first: filters for time and minimum sources, search
    /story/{id}           one story and every source
    /api/stories          the same as JSON (?since=24h&min_sources=2&q=...&limit=50)
    /api/story/{id}
    /feed.atom, /feed.json, /subscriptions.opml   the exports, at stable URLs

Each request opens the store read-only (SQLite mode=ro, WAL reader): it never blocks the
daemon's writes. Templates are Jinja2 with autoescaping on: every text from a feed is escaped.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from jinja2 import Environment
from msgspec.structs import asdict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .api import Aggregator
from .config import Settings, parse_duration
from .errors import AggregatorError, NotFoundError
from .export import web_url
from .render import HIT_END, HIT_START
from .store import open_store

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · aggregator</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;color:#222}
 a{color:#0645ad;text-decoration:none} a:hover{text-decoration:underline}
 table{border-collapse:collapse;width:100%} td,th{padding:.35rem .5rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
 .n{font-weight:600;text-align:center;width:4rem} .t{white-space:nowrap;color:#666;width:9rem}
 form{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin:1rem 0} label{display:flex;flex-direction:column;font-size:.8rem;color:#555}
 .why{color:#777;font-size:.8rem} mark{background:#fe6}
</style></head><body>
<h1><a href="/">aggregator</a>{% if heading %} · {{ heading }}{% endif %}</h1>
{{ body }}
<p class="why">Feeds: <a href="/feed.atom">Atom</a> · <a href="/feed.json">JSON Feed</a> · <a href="/subscriptions.opml">OPML</a> · <a href="/api/stories">API</a></p>
</body></html>"""

LIST = """<form method="get" action="/" id="filters">
 <label>Since <select name="since">{% for v, name in spans %}<option value="{{ v }}"{% if v == since %} selected{% endif %}>{{ name }}</option>{% endfor %}</select></label>
 <label>Min. sources <input type="number" name="min_sources" min="1" value="{{ min_sources }}" style="width:5rem"></label>
 <label>Search <input type="search" name="q" value="{{ q }}" placeholder="words, &quot;a phrase&quot;"></label>
 <button type="submit">Show</button>
</form>
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
<table id="stories"><thead><tr><th>Updated</th><th class="n">Sources</th><th>Story</th></tr></thead><tbody>
{% for s in stories %}<tr class="story"><td class="t">{{ s.last_updated.strftime("%Y-%m-%d %H:%M") }}</td><td class="n">{{ s.source_count }}</td>
<td><a href="/story/{{ s.id }}">{{ s.title }}</a>{% if s.snippet %}<div class="why">{{ s.snippet }}</div>{% endif %}</td></tr>
{% else %}<tr><td colspan="3">No stories match.</td></tr>{% endfor %}
</tbody></table>"""

STORY = """<p>{{ story.source_count }} source{{ "s" if story.source_count != 1 }}, first seen {{ story.first_seen.strftime("%Y-%m-%d %H:%M") }} UTC, updated {{ story.last_updated.strftime("%Y-%m-%d %H:%M") }} UTC</p>
<table id="sources"><thead><tr><th>Published</th><th>Outlet</th><th>Title</th></tr></thead><tbody>
{% for m in members %}<tr class="source"><td class="t">{{ m.published.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ m.outlet }}</td>
<td>{% if (m.link or m.url) | web_url %}<a href="{{ (m.link or m.url) | web_url }}" rel="noopener noreferrer">{{ m.title }}</a>{% else %}{{ m.title }}{% endif %}<div class="why">{{ m.reason or "" }}</div></td></tr>{% endfor %}
</tbody></table>"""

SPANS = [
    ("24h", "last 24 hours"),
    ("3d", "last 3 days"),
    ("7d", "last 7 days"),
    ("all", "all time"),
]
env = Environment(autoescape=True)
env.filters["web_url"] = lambda u: u if web_url(u) else None
_page, _list, _story = (env.from_string(t) for t in (PAGE, LIST, STORY))


def _snippet(text: str):
    from markupsafe import Markup, escape

    return Markup(str(escape(text)).replace(HIT_START, "<mark>").replace(HIT_END, "</mark>"))


def create_app(db: str | Path, settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    def agg() -> Aggregator:
        return Aggregator(open_store(str(db), readonly=True), settings)

    def params(request: Request):
        q = request.query_params
        since_text = q.get("since", "all")
        since = None if since_text in ("", "all") else timedelta(seconds=parse_duration(since_text))
        try:
            min_sources = max(1, int(q.get("min_sources", "1") or 1))
            limit = max(1, min(500, int(q.get("limit", "100") or 100)))
        except ValueError:
            min_sources, limit = 1, 100
        return since_text, since, min_sources, (q.get("q") or "").strip(), limit

    def story_rows(a: Aggregator, since, min_sources, q, limit):
        if not q:
            return [
                dict(asdict(s), snippet=None)
                for s in a.stories(since=since, min_sources=min_sources, limit=limit)
            ]
        rows = []
        for story, hit in a.search(q, since=since, limit=limit, stories=True):
            if story.source_count >= min_sources:
                rows.append(dict(asdict(story), snippet=hit.snippet))
        return rows

    def index(request: Request) -> Response:
        since_text, since, min_sources, q, limit = params(request)
        a = agg()
        error = None
        try:
            rows = story_rows(a, since, min_sources, q, limit)
        except AggregatorError as e:
            rows, error = [], str(e)
        finally:
            a.close()
        for r in rows:
            if r.get("snippet"):
                r["snippet"] = _snippet(r["snippet"])
        body = _list.render(
            stories=rows, spans=SPANS, since=since_text, min_sources=min_sources, q=q, error=error
        )
        return HTMLResponse(
            _page.render(title="Stories", heading=None, body=_markup(body)),
            status_code=400 if error else 200,
        )

    def story_page(request: Request) -> Response:
        a = agg()
        try:
            d = a.story(int(request.path_params["story_id"]))
        except NotFoundError as e:
            return HTMLResponse(
                _page.render(title="Not found", heading="not found", body=str(e)), 404
            )
        finally:
            a.close()
        body = _story.render(story=d.story, members=d.members)
        return HTMLResponse(
            _page.render(title=d.story.title, heading=d.story.title, body=_markup(body))
        )

    def api_stories(request: Request) -> Response:
        _, since, min_sources, q, limit = params(request)
        a = agg()
        try:
            rows = story_rows(a, since, min_sources, q, limit)
        except AggregatorError as e:
            return JSONResponse({"error": str(e)}, 400)
        finally:
            a.close()
        return JSONResponse([_json(r) for r in rows])

    def api_story(request: Request) -> Response:
        a = agg()
        try:
            d = a.story(int(request.path_params["story_id"]))
        except NotFoundError as e:
            return JSONResponse({"error": str(e)}, 404)
        finally:
            a.close()
        return JSONResponse(
            {**_json(asdict(d.story)), "sources": [_json(asdict(m)) for m in d.members]}
        )

    def feed(fmt: str, media: str):
        def endpoint(request: Request) -> Response:
            _, since, min_sources, _, limit = params(request)
            a = agg()
            try:
                text = a.export(
                    fmt,
                    since=since,
                    min_sources=min_sources,
                    limit=limit,
                    self_url=str(request.url),
                )
            finally:
                a.close()
            return Response(text, media_type=media)

        return endpoint

    routes = [
        Route("/", index),
        Route("/story/{story_id:int}", story_page),
        Route("/api/stories", api_stories),
        Route("/api/story/{story_id:int}", api_story),
        Route("/feed.atom", feed("atom", "application/atom+xml; charset=utf-8")),
        Route("/feed.json", feed("jsonfeed", "application/feed+json; charset=utf-8")),
        Route("/subscriptions.opml", feed("opml", "text/x-opml; charset=utf-8")),
    ]
    return Starlette(routes=routes)


def _json(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, str) and HIT_START in v:
            v = v.replace(HIT_START, "").replace(HIT_END, "")
        out[k] = v
    return out


def _markup(html: str):
    from markupsafe import Markup

    return Markup(html)  # already rendered with autoescaping


def serve(db: str | Path, host: str, port: int, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(create_app(db, settings), host=host, port=port, log_level="warning")
