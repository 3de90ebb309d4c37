"""The command line: one thin function per command over aggregator.api.

Errors a user can cause end in one line on stderr ("error: ...") and a non-zero exit;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from pathlib import Path

import click

from ._version import __version__
from .api import Aggregator
from .config import ENV_CONFIG, ENV_DB, load_settings, parse_duration
from .errors import AggregatorError, ConfigError
from .models import Feed, StoredEntry
from .render import FORMATS, default_format, render

EXIT_ERROR = 1


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
    """Turns AggregatorError into one line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AggregatorError as e:
            state = ctx.find_object(State)
            if state is not None and state.debug:
                raise
            click.echo(f"error: {e}", err=True)
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
    return {
        "id": f.id,
        "title": f.display_title,
        "url": f.url,
        "status": ("gone" if f.gone else f.last_status) or "never fetched",
        "http": f.last_http_status,
        "last_fetched": f.last_fetched_at,
        "entries": f.entry_count,
        "last_error": f.last_error,
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
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
@click.pass_obj
def update(state: State, feed_refs: tuple[str, ...], progress: bool | None):
    """Fetch every feed (or the given ones) once, concurrently, and store new entries.

    Exits 0 even when some feeds fail; their errors are in `aggregator feeds list`."""
    agg = state.agg()
    show = sys.stderr.isatty() if progress is None else progress
    summary = _run_update(agg, list(feed_refs) or None, show)
    click.echo(summary.line())


def _run_update(agg: Aggregator, feed_refs, show_progress: bool):
    if not show_progress:
        return agg.update(feed_refs)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("updating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("update", total=None)
        return agg.update(
            feed_refs,
            on_start=lambda n: bar.update(task, total=n),
            on_result=lambda r: bar.advance(task),
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


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="aggregator")


if __name__ == "__main__":  # pragma: no cover
    main()
