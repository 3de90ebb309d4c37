"""The command line: one thin function per command over aggregator.api.

Errors a user can cause end in one line on stderr ("error: ...") and a non-zero exit;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import click

from ._version import __version__
from .api import Aggregator
from .config import ENV_CONFIG, ENV_DB, load_settings, parse_duration
from .errors import AggregatorError, ConfigError
from .models import Feed, StoredEntry, Story, StoryMember
from .render import FORMATS, default_format, render

EXIT_ERROR = 1


def _one_line(e: Exception) -> str | None:
    """What a user is told of ``e``: an AggregatorError's message, or for an error the store's
    database raised where the store did not turn it into one (a read of a damaged SQLite
    file, a PostgreSQL server gone), what it said and what to do. None: a bug, shown whole."""
    if isinstance(e, AggregatorError):
        return str(e)
    from .store.sqlite import refused, what_to_do

    if refused(e):
        why = str(e)
        return f"the store failed: {why}; {what_to_do(why)}"
    psycopg = sys.modules.get("psycopg")  # (loaded only when the store is PostgreSQL)
    if psycopg is not None and isinstance(e, psycopg.OperationalError):
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"the store failed: {first}; check that the PostgreSQL server is up and reachable"
    return None


class State:
    def __init__(self, db: str | None, config: Path | None, debug: bool):
        self.db = db
        self.config = config
        self.debug = debug
        self._agg: Aggregator | None = None

    def agg(self) -> Aggregator:
        if self._agg is None:
            settings = load_settings(self.config)
            self._agg = Aggregator.open(db=self.db, settings=settings)
        return self._agg

    def close(self) -> None:
        if self._agg is not None:
            self._agg.close()


class Group(click.Group):
    """Turns AggregatorError, and an error of the store's database, into one line and exit
    code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as e:
            message = _one_line(e)
            state = ctx.find_object(State)
            if message is None or (state is not None and state.debug):
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def output_options(columns: tuple[str, ...]):
    """Shared --format option for every query command; the command returns rows (dicts)."""

    def deco(fn):
        @click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default=None,
            help="Output format (default: table on a terminal, ndjson otherwise).",
        )
        @functools.wraps(fn)
        def wrapper(*args, fmt, **kwargs):
            rows = fn(*args, **kwargs)
            render(rows, fmt or default_format(), columns)

        return wrapper

    return deco


def since_option(fn):
    return click.option(
        "--since",
        metavar="AGE",
        default=None,
        help="Only items newer than AGE (e.g. 30m, 24h, 7d).",
    )(fn)


def _since(text: str | None) -> timedelta | None:
    return None if text is None else timedelta(seconds=parse_duration(text))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
@click.option(
    "--db",
    envvar=ENV_DB,
    metavar="PATH",
    show_envvar=True,
    help="The store: a SQLite file path (default: one in your user data directory).",
)
@click.option(
    "--config",
    "config",
    envvar=ENV_CONFIG,
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A TOML settings file (see config/aggregator.toml for every setting).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: Path | None, debug: bool):
    """Fetch news feeds and merge the same event from many outlets into one story."""
    state = State(db, config, debug)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- feeds ----------------------------------------------------------------------------------------


@cli.group(cls=Group)
def feeds():
    """Manage subscriptions: add, list, remove, import and export feeds."""


def feed_row(f: Feed) -> dict:
    if f.disabled_reason:
        status = "disabled"
    else:
        status = ("gone" if f.gone else f.last_status) or "never fetched"
    return {
        "id": f.id,
        "title": f.display_title,
        "url": f.url,
        "status": status,
        "http": f.last_http_status,
        "last_fetched": f.last_fetched_at,
        "next_check": f.next_check_at,
        "entries": f.entry_count,
        "last_error": f.disabled_reason or f.last_error,
        "schedule": f.schedule_reason,
        "previous_urls": list(f.previous_urls),
    }


@feeds.command("add")
@click.argument("url")
@click.option("--title", help="Your own title for the feed.")
@click.option("--no-check", is_flag=True, help="Add without fetching the URL first.")
@click.pass_obj
def feeds_add(state: State, url: str, title: str | None, no_check: bool):
    """Subscribe to the feed at URL (a web page that links a feed works too)."""
    res = state.agg().add_feed(url, title=title, check=not no_check)
    if res.note:
        click.echo(res.note, err=True)
    extra = f", {res.result.new_entries} entries" if res.result and res.result.new_entries else ""
    click.echo(f"added feed {res.feed.id}: {res.feed.url}{extra}")


@feeds.command("list")
@output_options(("id", "title", "url", "status", "last_fetched", "entries", "last_error"))
@click.pass_obj
def feeds_list(state: State):
    """List feeds with their last status and last error."""
    return [feed_row(f) for f in state.agg().feeds()]


@feeds.command("enable")
@click.argument("feed")
@click.pass_obj
def feeds_enable(state: State, feed: str):
    """Turn a disabled (or gone) feed back on; it is fetched at the next round."""
    f = state.agg().enable_feed(feed)
    click.echo(f"enabled feed {f.id}: {f.url}")


@feeds.command("remove")
@click.argument("feed")
@click.pass_obj
def feeds_remove(state: State, feed: str):
    """Unsubscribe from FEED (its URL or id) and delete its entries."""
    f = state.agg().remove_feed(feed)
    click.echo(f"removed feed {f.id}: {f.url}")


@feeds.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def feeds_import(state: State, file: Path):
    """Subscribe to every feed listed in an OPML FILE."""
    res = state.agg().import_opml(file)
    click.echo(
        f"imported {res.added} feeds; {res.existing} already subscribed; {len(res.invalid)} invalid"
    )
    for url in res.invalid:
        click.echo(f"skipped invalid URL: {url}", err=True)


@feeds.command("export")
@click.pass_obj
def feeds_export(state: State):
    """Write your subscriptions as OPML 2.0 to stdout."""
    click.echo(state.agg().export_opml(), nl=False)


# -- update ---------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--feed", "feed_refs", multiple=True, metavar="URL|ID", help="Only this feed (repeatable)."
)
@click.option(
    "--due", is_flag=True, help="Only feeds whose scheduled check has come (as the daemon does)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
@click.pass_obj
def update(state: State, feed_refs: tuple[str, ...], due: bool, progress: bool | None):
    """Fetch every feed (or the given ones) once, concurrently, and store new entries.

    Exits 0 even when some feeds fail; their errors are in `aggregator feeds list`."""
    agg = state.agg()
    show = sys.stderr.isatty() if progress is None else progress
    summary = _run_update(agg, list(feed_refs) or None, show, due)
    agg.record_round(summary)
    click.echo(summary.line())


def _run_update(agg: Aggregator, feed_refs, show_progress: bool, due: bool = False):
    # one round, then the process ends: the clusterer snapshot may be read while it fetches
    once = {"due_only": due, "keep_clusterer": False}
    if not show_progress:
        return agg.update(feed_refs, **once)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("updating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("update", total=None)
        return agg.update(
            feed_refs,
            on_start=lambda n: bar.update(task, total=n),
            on_result=lambda r: bar.advance(task),
            **once,
        )


# -- queries --------------------------------------------------------------------------------------


def entry_row(e: StoredEntry) -> dict:
    return {
        "id": e.id,
        "published": e.published,
        "feed": e.feed_title,
        "title": e.title,
        "link": e.link or e.url,
        "url": e.url,
        "author": e.author,
        "summary": e.summary,
        "feed_id": e.feed_id,
        "story_id": e.story_id,
    }


@cli.command()
@since_option
@click.option(
    "--feed", "feed_refs", multiple=True, metavar="URL|ID", help="Only this feed (repeatable)."
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@output_options(("id", "published", "feed", "title", "link"))
@click.pass_obj
def entries(state: State, since: str | None, feed_refs: tuple[str, ...], limit: int):
    """The newest entries."""
    rows = state.agg().entries(since=_since(since), feeds=list(feed_refs) or None, limit=limit)
    return [entry_row(e) for e in rows]


# -- stories --------------------------------------------------------------------------------------


def story_row(s: Story) -> dict:
    return {
        "id": s.id,
        "last_updated": s.last_updated,
        "sources": s.source_count,
        "entries": s.entry_count,
        "title": s.title,
        "first_seen": s.first_seen,
    }


def member_row(m: StoryMember) -> dict:
    return {
        "entry_id": m.entry_id,
        "published": m.published,
        "outlet": m.outlet,
        "title": m.title,
        "link": m.link or m.url,
        "score": None if m.score is None else round(m.score, 3),
        "why": m.reason,
    }


@cli.command()
@since_option
@click.option(
    "--min-sources",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Only stories covered by at least N outlets.",
)
@click.option(
    "--feed",
    "feed_refs",
    multiple=True,
    metavar="URL|ID",
    help="Only stories with an entry from this feed.",
)
@click.option(
    "--search",
    metavar="TEXT",
    help="Only stories with an entry whose title or summary contains TEXT.",
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@output_options(("id", "last_updated", "sources", "entries", "title"))
@click.pass_obj
def stories(state: State, since, min_sources, feed_refs, search, limit):
    """Stories, newest first, with how many outlets covered each."""
    rows = state.agg().stories(
        since=_since(since),
        min_sources=min_sources,
        feeds=list(feed_refs) or None,
        search=search,
        limit=limit,
    )
    return [story_row(s) for s in rows]


class DefaultCommandGroup(Group):
    """A group whose first argument may be an id: `story 12` means `story show 12`."""

    default_command = "show"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@cli.group(cls=DefaultCommandGroup)
def story():
    """Show one story (`aggregator story ID`), or correct stories: merge, split."""


@story.command("show")
@click.argument("story_id", type=int)
@output_options(("entry_id", "published", "outlet", "title", "link", "score", "why"))
@click.pass_obj
def story_show(state: State, story_id: int):
    """A story and every source: outlet, title, link, time, and why it joined."""
    detail = state.agg().story(story_id)
    s = detail.story
    click.echo(
        f"story {s.id}: {s.title} ({s.source_count} sources, {s.entry_count} entries)", err=True
    )
    return [member_row(m) for m in detail.members]


@story.command("merge")
@click.argument("keep", type=int)
@click.argument("other", type=int)
@click.pass_obj
def story_merge(state: State, keep: int, other: int):
    """Merge story OTHER into story KEEP. Later rounds respect it."""
    d = state.agg().merge_stories(keep, other)
    click.echo(
        f"merged story {other} into {keep}: "
        f"{d.story.entry_count} entries, {d.story.source_count} sources"
    )


@story.command("split")
@click.argument("story_id", type=int)
@click.argument("entry_ids", type=int, nargs=-1, required=True)
@click.pass_obj
def story_split(state: State, story_id: int, entry_ids: tuple[int, ...]):
    """Move ENTRY_IDS out of STORY_ID into a new story; the two are never merged again."""
    d = state.agg().split_story(story_id, entry_ids)
    click.echo(f"split {len(entry_ids)} entries from story {story_id} into new story {d.story.id}")


@cli.group(cls=Group)
def entry():
    """Correct one entry's story."""


@entry.command("detach")
@click.argument("entry_id", type=int)
@click.pass_obj
def entry_detach(state: State, entry_id: int):
    """Move ENTRY_ID out of its story into a story of its own."""
    d = state.agg().detach_entry(entry_id)
    click.echo(f"entry {entry_id} is now alone in story {d.story.id}")


@cli.command()
@click.argument("entry_a", type=int)
@click.argument("entry_b", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the breakdown as JSON.")
@click.pass_obj
def explain(state: State, entry_a: int, entry_b: int, as_json: bool):
    """The similarity breakdown of two entries, and whether they would be merged."""
    from .render import explanation_dict, explanation_text

    e = state.agg().explain(entry_a, entry_b)
    if as_json:
        import json

        click.echo(json.dumps(explanation_dict(e), indent=2, ensure_ascii=False))
    else:
        click.echo(explanation_text(e))


@cli.command("eval")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option(
    "--assignments",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Write one {"id", "story"} line per input entry to this file.',
)
@click.pass_obj
def eval_command(state: State, file: Path, as_json: bool, assignments: Path | None):
    """Cluster labeled entries (JSONL) with the real pipeline and score the result."""
    from .evaluate import evaluate_file, report_text

    report = evaluate_file(file, load_settings(state.config), assignments)
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(report_text(report))


@cli.command()
@click.argument("query")
@since_option
@click.option("--stories", "by_story", is_flag=True, help="One result per story (its best entry).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@output_options(("rank", "published", "feed", "title", "snippet"))
@click.pass_obj
def search(state: State, query: str, since: str | None, by_story: bool, limit: int):
    """Full-text search over titles and summaries, best match first.

    QUERY uses SQLite FTS5 syntax: words (all must match), "exact phrases", OR, NOT,
    prefix*, title:word."""
    agg = state.agg()
    hits = agg.search(query, since=_since(since), limit=limit, stories=by_story)
    rows = []
    for i, item in enumerate(hits, 1):
        story, hit = item if by_story else (None, item)
        e = hit.entry
        row = {
            "rank": i,
            "published": e.published,
            "feed": e.feed_title,
            "title": e.title,
            "snippet": hit.snippet,
            "entry_id": e.id,
            "story_id": e.story_id,
            "link": e.link or e.url,
        }
        if story is not None:
            row.update(title=story.title, sources=story.source_count)
        rows.append(row)
    return rows


@cli.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["atom", "jsonfeed", "opml"]),
    default="atom",
    show_default=True,
    help="Atom 1.0 or JSON Feed 1.1 of the stories, or OPML of the feeds.",
)
@since_option
@click.option("--min-sources", type=click.IntRange(1), default=1, show_default=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.pass_obj
def export_command(state: State, fmt: str, since: str | None, min_sources: int, limit: int):
    """Write the merged stories as a feed (one item per story, every source linked)."""
    click.echo(
        state.agg().export(fmt, since=_since(since), min_sources=min_sources, limit=limit), nl=False
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.pass_obj
def serve(state: State, host: str, port: int):
    """Serve a read-only web page of stories (and /api, /feed.atom, /feed.json)."""
    from .store import default_db_path
    from .store.postgres import redact
    from .web import serve as run_server

    settings = load_settings(state.config)
    db = state.db or settings.store.path or str(default_db_path())
    state.agg().close()  # opens (and migrates) the store once, so read-only opens succeed
    state._agg = None
    click.echo(f"serving {redact(db)} on http://{host}:{port}/", err=True)
    run_server(db, host, port, settings)


@cli.command()
@click.argument("target", metavar="POSTGRESQL_URL")
@click.pass_obj
def migrate(state: State, target: str):
    """Copy this SQLite store (--db) into an empty PostgreSQL store: feeds, entries, stories,
    corrections, every row with its id. Then run with --db POSTGRESQL_URL."""
    from .store.postgres import redact

    counts = state.agg().migrate_to(
        target, on_table=lambda table, n: click.echo(f"{table}: {n} rows", err=True)
    )
    total = sum(counts.values())
    click.echo(f"copied {total} rows into {redact(target)}; use --db with that URL from now on")


# -- the daemon -----------------------------------------------------------------------------------


@cli.command()
@click.option("--once", is_flag=True, help="Run one round of due feeds and exit.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log format on stderr (default: text on a terminal, json otherwise).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics and /healthz on 127.0.0.1:PORT (default: config).",
)
@click.option(
    "--tick",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Seconds between looks for due feeds (default: config, 30).",
)
@click.pass_obj
def run(
    state: State, once: bool, log_format: str | None, metrics_port: int | None, tick: float | None
):
    """Run the daemon in the foreground: poll feeds on their schedule until stopped.

    SIGTERM or SIGINT stops it cleanly; SIGHUP reloads the configuration file."""
    from .daemon import run_daemon

    fmt = log_format or ("text" if sys.stderr.isatty() else "json")
    code = run_daemon(
        state.db,
        state.config,
        once=once,
        log_format=fmt,
        metrics_port=metrics_port,
        tick_seconds=tick,
    )
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(state: State, as_json: bool):
    """Feeds total/due/failing/disabled, the last round, and the store's size."""
    import json

    s = state.agg().status()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    f = s["feeds"]
    click.echo(
        f"feeds    {f['total']} total, {f['due']} due, {f['failing']} failing, "
        f"{f['disabled']} disabled"
    )
    click.echo(
        f"store    {s['entries']} entries, {s['stories']} stories, {s['store_bytes'] / 1e6:.1f} MB"
    )
    last = s["last_round"]
    click.echo(
        f"last     {last['finished_at']}: {last['summary']}" if last else "last     no round yet"
    )


# -- demo -----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--keep",
    "keep",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Keep the demo store at this path (default: a temporary file).",
)
@click.pass_obj
def demo(state: State, keep: Path | None):
    """Serve the bundled demo feeds on 127.0.0.1, run one round into a fresh store, print it."""
    from .demo import run_demo

    try:
        settings = load_settings(state.config)
    except ConfigError:
        raise
    run_demo(settings, keep, out=sys.stdout)


def command_line(argv: list[str] | None = None) -> None:
    """The command line on ``argv`` (sys.argv's by default); ends in SystemExit, as click's
    standalone mode does."""
    # httpx's package import also imports its own command line, httpx._main (rich's console
    # and progress, pygments, click: 25-35 ms of every `aggregator update` here), which this
    # process never runs. A None in sys.modules makes that import fail, and httpx falls back to
    # a stub `httpx.main` (its own except-ImportError branch). Only here, in the CLI's process:
    # a program that imports the library keeps its httpx whole.
    sys.modules.setdefault("httpx._main", None)
    cli.main(args=argv, prog_name="aggregator")


def main(argv: list[str] | None = None) -> NoReturn:
    """The `aggregator` program: ``command_line``, then the process ends (``exit_quickly``)."""
    try:
        command_line(argv)
    except SystemExit as e:
        # (in the clause: the exception holds the command's frames, and through them its
        # objects, which the clause's end would free one by one)
        exit_quickly(e.code)
    exit_quickly(0)


def exit_quickly(code: int | str | None) -> NoReturn:
    """End the process with ``code`` (as SystemExit takes it) without freeing every object
    first: once the command is done, its objects are only freed for the process to end, and
    a round's clusterer is millions of them (after the bench's cold round, 50 ms of CPU at
    1000 feeds, 0.27 s at 5000, between the command's end and the interpreter's exit
    handlers). So the output and the logs are flushed and the process leaves with
    ``os._exit``, skipping the exit handlers, which have nothing left to do: the store is
    closed, and a round's threads and processes have ended. When a thread or a child process
    still runs (a daemon that gave up waiting for its round), it ends as usual instead, as the
    interpreter's exit waits for them; and without the interpreter's last garbage collection
    (frozen objects are still freed, only that pass over them is skipped)."""
    import gc
    import logging
    import threading

    if isinstance(code, str):  # (what SystemExit prints, with status 1)
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    mp = sys.modules.get("multiprocessing")
    alone = threading.active_count() == 1 and not (mp is not None and mp.active_children())
    if alone:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # (a reader gone, as `| head` does: status 1)
                status = status or 1
        os._exit(status)
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
