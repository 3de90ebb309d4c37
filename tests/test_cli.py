"""The real CLI commands against a temporary store and a real local HTTP server."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from aggregator.cli import cli

from .conftest import rss, simple_items


def serve_feed(server, path, title, n, prefix=None):
    server.expect_request(path).respond_with_data(
        rss(title, simple_items(n, prefix or title)), content_type="application/rss+xml"
    )
    return server.url_for(path)


def test_help_lists_every_command(run_cli):
    out = run_cli("--help").stdout
    for name in ("feeds", "update", "entries", "demo"):
        assert name in out
    sub = run_cli("feeds", "--help").stdout
    for name in ("add", "list", "remove", "import", "export"):
        assert name in sub
    for command in cli.commands.values():
        assert command.help, f"{command.name} has no help text"


def test_add_list_update_entries(server, run_cli):
    a = serve_feed(server, "/a.xml", "Alpha", 3)
    b = serve_feed(server, "/b.xml", "Beta", 2)
    out = run_cli("feeds", "add", a, "--title", "My Alpha").stdout
    assert "added feed 1" in out and "3 entries" in out
    run_cli("feeds", "add", b)
    feeds = [
        json.loads(line)
        for line in run_cli("feeds", "list", "--format", "ndjson").stdout.splitlines()
    ]
    assert [(f["id"], f["title"], f["status"], f["entries"]) for f in feeds] == [
        (1, "My Alpha", "ok", 3),
        (2, "Beta", "ok", 2),
    ]

    res = run_cli("update")
    assert res.stdout.strip().startswith("2 feeds in")
    assert "0 ok, 2 not modified, 0 failed; 0 new entries" in res.stdout

    entries = json.loads(run_cli("entries", "--format", "json").stdout)
    assert len(entries) == 5
    assert {e["feed"] for e in entries} == {"My Alpha", "Beta"}
    urls = {e["url"] for e in entries}
    assert "https://outlet.example/alpha-0" in urls  # tracking parameter dropped
    only_b = json.loads(run_cli("entries", "--feed", b, "--format", "json").stdout)
    assert {e["feed"] for e in only_b} == {"Beta"}
    assert len(json.loads(run_cli("entries", "--limit", "2", "--format", "json").stdout)) == 2


def test_adding_twice_says_so_and_changes_nothing(server, run_cli):
    a = serve_feed(server, "/a.xml", "Alpha", 1)
    run_cli("feeds", "add", a)
    res = run_cli("feeds", "add", a.replace("http://127.0.0.1", "HTTP://127.0.0.1"), ok=False)
    assert res.exit_code == 1
    assert "already subscribed" in res.stderr
    assert len(run_cli("feeds", "list", "--format", "ndjson").stdout.splitlines()) == 1


def test_add_html_page_uses_the_feed_it_links(server, run_cli):
    feed = serve_feed(server, "/feed.xml", "Alpha", 2)
    server.expect_request("/").respond_with_data(
        '<html><head><link rel="alternate" type="application/rss+xml" href="/feed.xml"></head></html>',
        content_type="text/html",
    )
    res = run_cli("feeds", "add", server.url_for("/"))
    assert feed in res.stdout
    assert "web page" in res.stderr


def test_add_html_page_without_feed_is_refused(server, run_cli):
    server.expect_request("/").respond_with_data(
        "<html><body>hi</body></html>", content_type="text/html"
    )
    res = run_cli("feeds", "add", server.url_for("/"), ok=False)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and "links no feed" in res.stderr
    assert res.stderr.count("\n") == 1
    assert run_cli("feeds", "list", "--format", "ndjson").stdout == ""


def test_failures_are_listed_and_update_still_exits_zero(server, run_cli):
    good = serve_feed(server, "/good.xml", "Good", 2)
    server.expect_request("/bad.xml").respond_with_data("boom", status=500)
    run_cli("feeds", "add", good)
    run_cli("feeds", "add", server.url_for("/bad.xml"))
    res = run_cli("update")
    assert res.exit_code == 0
    assert "1 failed" in res.stdout
    rows = list(csv.DictReader(io.StringIO(run_cli("feeds", "list", "--format", "csv").stdout)))
    bad = next(r for r in rows if r["url"].endswith("/bad.xml"))
    assert bad["status"] == "http_error" and bad["last_error"].startswith("HTTP 500")


def test_remove_by_url_and_id(server, run_cli):
    a = serve_feed(server, "/a.xml", "Alpha", 1)
    b = serve_feed(server, "/b.xml", "Beta", 1)
    run_cli("feeds", "add", a)
    run_cli("feeds", "add", b)
    assert "removed feed 1" in run_cli("feeds", "remove", a).stdout
    assert "removed feed 2" in run_cli("feeds", "remove", "2").stdout
    res = run_cli("feeds", "remove", "2", ok=False)
    assert res.exit_code == 1 and "no feed 2" in res.stderr


def test_opml_import_and_export_round_trip(tmp_path, run_cli):
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>'
        '<outline text="Tech"><outline text="A" type="rss" xmlUrl="https://a.example/feed"/>'
        '<outline text="B" type="rss" xmlUrl="https://b.example/rss"/></outline>'
        '<outline text="Bad" type="rss" xmlUrl="ftp://c.example/x"/></body></opml>'
    )
    res = run_cli("feeds", "import", str(opml))
    assert "imported 2 feeds; 0 already subscribed; 1 invalid" in res.stdout
    res = run_cli("feeds", "import", str(opml))
    assert "imported 0 feeds; 2 already subscribed" in res.stdout
    out = run_cli("feeds", "export").stdout
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert 'version="2.0"' in out
    reimport = tmp_path / "again.opml"
    reimport.write_text(out)
    import listparser

    parsed = listparser.parse(out.encode())
    assert sorted(f.url for f in parsed.feeds) == [
        "https://a.example/feed",
        "https://b.example/rss",
    ]
    assert sorted(f.title for f in parsed.feeds) == ["A", "B"]


def test_bad_opml_file(tmp_path, run_cli):
    bad = tmp_path / "bad.opml"
    bad.write_text("this is not xml")
    res = run_cli("feeds", "import", str(bad), ok=False)
    assert res.exit_code == 1 and res.stderr.startswith("error:")
    res = run_cli("feeds", "import", str(tmp_path / "missing.opml"), ok=False)
    assert res.exit_code == 1 and "cannot read" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("feeds", "add", "not a url"), "is not an http(s) URL"),
        (("feeds", "add", "file:///etc/passwd"), "is not an http(s) URL"),
        (("entries", "--since", "yesterday"), "is not a duration"),
        (("entries", "--feed", "99"), "no feed 99"),
    ],
)
def test_user_errors_are_one_line(run_cli, args, message):
    res = run_cli(*args, ok=False)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert res.stderr.count("\n") == 1


def test_bad_flag_is_a_usage_error(run_cli):
    res = run_cli("entries", "--limit", "zero", ok=False)
    assert res.exit_code == 2
    res = run_cli("entries", "--format", "xml", ok=False)
    assert res.exit_code == 2


def test_bad_config_is_one_line(tmp_path, run_cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[fetch]\nconcurency = 3\n")
    res = run_cli("--config", str(cfg), "feeds", "list", ok=False)
    assert res.exit_code == 1
    assert "unknown key fetch.concurency" in res.stderr
    cfg.write_text('[fetch]\nconcurrency = "many"\n')
    res = run_cli("--config", str(cfg), "feeds", "list", ok=False)
    assert "fetch.concurrency must be int" in res.stderr


def test_debug_shows_the_traceback(run_cli):
    with pytest.raises(Exception, match="is not an http"):
        run_cli("--debug", "feeds", "add", "nope", ok=False)


def test_a_damaged_store_is_one_line_that_says_what_to_do(server, run_cli):
    """A store file damaged under the store's tables (a disk error, a copy cut short) fails in
    the query that reads it: one line, exit 1; --debug still shows the traceback."""
    import sqlite3

    run_cli("feeds", "add", serve_feed(server, "/feed.xml", "Outlet", 30))
    db = sqlite3.connect(run_cli.db)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(run_cli.db, "r+b") as f:  # the entries table's first page, overwritten
        f.seek((root - 1) * size)
        f.write(bytes(range(256)) * (size // 256))
    res = run_cli("entries", ok=False)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.startswith(
        "error: the store failed: database disk image is malformed; it is damaged: restore it"
    )
    assert res.stderr.count("\n") == 1 and ".recover" in res.stderr
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        run_cli("--debug", "entries", ok=False)


def test_db_from_environment(tmp_path, server):
    from click.testing import CliRunner

    db = tmp_path / "env.sqlite"
    url = serve_feed(server, "/a.xml", "Alpha", 1)
    res = CliRunner().invoke(cli, ["feeds", "add", url], env={"AGGREGATOR_DB": str(db)})
    assert res.exit_code == 0, res.output
    assert db.exists()


def test_entries_table_and_csv_formats(server, run_cli):
    run_cli("feeds", "add", serve_feed(server, "/a.xml", "Alpha", 2))
    table = run_cli("entries", "--format", "table").stdout
    assert "Alpha 0" in table and "published" in table
    rows = list(csv.DictReader(io.StringIO(run_cli("entries", "--format", "csv").stdout)))
    assert [r["title"] for r in rows] == ["Alpha 0", "Alpha 1"]
    assert rows[0]["published"].endswith("Z")


def test_demo_runs_as_a_real_process(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "aggregator", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    assert "5 feeds" in res.stdout and "0 failed" in res.stdout
    assert "Rotterdam" in res.stdout


def test_update_with_progress_bar_and_one_feed(server, run_cli):
    a = serve_feed(server, "/a.xml", "Alpha", 2)
    b = serve_feed(server, "/b.xml", "Beta", 2)
    run_cli("feeds", "add", "--no-check", a)
    run_cli("feeds", "add", "--no-check", b)
    res = run_cli("update", "--progress", "--feed", a)
    assert res.stdout.startswith("1 feeds in") and "2 new entries" in res.stdout
    res = run_cli("update", "--no-progress")
    assert "2 feeds in" in res.stdout and "2 new entries" in res.stdout


def test_unwritable_store_path_is_one_line(tmp_path):
    from click.testing import CliRunner

    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(cli, ["--db", str(blocker / "sub" / "s.sqlite"), "feeds", "list"])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: cannot create the store") and res.stderr.count("\n") == 1


def test_feed_text_is_not_read_as_markup(server, run_cli):
    server.expect_request("/m.xml").respond_with_data(
        rss(
            "[bold red]Evil[/bold red]",
            [{"title": "[link=http://evil]click[/link] <b>x</b>", "guid": "1"}],
        )
    )
    run_cli("feeds", "add", server.url_for("/m.xml"))
    out = run_cli("entries", "--format", "table").stdout
    assert "[link=http://evil]click[/link]" in out
    assert "[bold red]Evil[/bold red]" in out


# runs the CLI on argv[2:], then prints which of the modules named in argv[1] it loaded (a None
# in sys.modules is an import that was blocked, not a module)
LOADED = """
import sys
from aggregator.cli import command_line
try:
    command_line(sys.argv[2:])
except SystemExit as e:
    assert not e.code, e.code
print("loaded:", *[m for m in sys.argv[1].split(",") if sys.modules.get(m)])
"""


def loaded_by(modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    """The CLI in a new process; its output ends with the ``modules`` it loaded."""
    out = subprocess.run(
        [sys.executable, "-c", LOADED, ",".join(modules), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


HEAVY = ("httpx", "feedparser", "w3lib", "selectolax")
HEAVY += ("aggregator.pipeline", "aggregator.fetch", "aggregator.clustering")
HEAVY += ("aggregator.dedup.cluster", "rapidfuzz")


@pytest.mark.parametrize("args", [["stories", "--since", "24h"], ["search", "budget"], ["entries"]])
def test_a_query_loads_nothing_a_round_needs(tmp_path, args):
    """Queries start without the HTTP client, the parsers or the clusterer (importing them was
    about half of a query's start-up)."""
    out = loaded_by(HEAVY, "--db", str(tmp_path / "s.sqlite"), *args)
    assert out.stdout.splitlines()[-1] == "loaded:", out.stdout


def test_a_round_loads_httpx_only_for_a_feed_that_needs_it(server, tmp_path):
    """A round's requests go through httpcore (httpx's transport layer): with plain URLs its
    process imports neither httpx (30-50 ms of CPU) nor httpx's own command line (rich, pygments, which
    `aggregator` blocks). A URL that httpx has to parse (here, one with a user name) brings
    httpx in, and still not its command line."""
    db = str(tmp_path / "s.sqlite")
    url = serve_feed(server, "/feed.xml", "Outlet", 3)
    modules = ("httpx", "httpx._main", "rich", "pygments")
    for args in (["feeds", "add", url], ["update", "--no-progress"]):
        out = loaded_by(modules, "--db", db, *args)
        assert out.stdout.splitlines()[-1] == "loaded:", out.stdout
    assert "1 not modified, 0 failed" in out.stdout, out.stdout  # fetched again, over httpcore
    odd = url.replace("http://", "http://reader@")
    out = loaded_by(modules, "--db", db, "feeds", "add", odd)
    assert "added feed 2" in out.stdout and out.stdout.splitlines()[-1] == "loaded: httpx"


def test_a_round_loads_the_clusterer_only_when_it_has_entries_to_place(server, tmp_path):
    """The clusterer's module (compiled, with rapidfuzz: ~30 ms to import) is for rounds that
    place entries; one where every feed is unchanged does without it."""
    db = str(tmp_path / "s.sqlite")
    url = serve_feed(server, "/feed.xml", "Outlet", 3)
    modules = ("aggregator.dedup.cluster", "rapidfuzz")
    out = loaded_by(modules, "--db", db, "feeds", "add", url)
    assert out.stdout.splitlines()[-1] == "loaded: aggregator.dedup.cluster rapidfuzz"
    out = loaded_by(modules, "--db", db, "update", "--no-progress")
    assert "1 not modified" in out.stdout and out.stdout.splitlines()[-1] == "loaded:"


# the program (``main``) on argv[2:], with an exit handler of its own; with argv[1] "thread", a
# thread of its own still runs when the command ends
EXITING = """
import atexit, sys, threading, time
from aggregator.cli import main
atexit.register(lambda: print("exit handlers ran", flush=True))
if sys.argv[1] == "thread":
    threading.Thread(target=time.sleep, args=(0.3,)).start()
main(sys.argv[2:])
"""


def exiting(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", EXITING, *args], capture_output=True, text=True, timeout=120
    )


def test_the_program_ends_without_its_exit_handlers_once_alone_with_its_status(tmp_path):
    """Its command done, the program leaves at once (``exit_quickly``: its objects are not freed
    one by one), with the command's status and all of its output; the usual exit, handlers and
    all, when a thread of the process still runs."""
    from aggregator.store import open_store

    from .conftest import make_entry, store_entries

    db, now = tmp_path / "s.sqlite", datetime(2026, 11, 20, tzinfo=UTC)
    store = open_store(str(db))
    feed = store.add_feed("https://x.example/feed", None, now)
    store_entries(store, feed, [make_entry(feed.id, i, now) for i in range(3000)], now)
    store.close()
    listed = exiting("alone", "--db", str(db), "entries", "--format", "ndjson", "--limit", "5000")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()  # (a pipe's buffer, flushed before the process ends)
    assert len(lines) == 3000 and all(json.loads(line)["feed_id"] == feed.id for line in lines)
    bad = exiting("alone", "--bogus")
    assert bad.returncode == 2 and "No such option" in bad.stderr and bad.stdout == ""
    (tmp_path / "bad.toml").write_text("[fetch\n")
    failed = exiting("alone", "--config", str(tmp_path / "bad.toml"), "--db", str(db), "entries")
    assert failed.returncode == 1 and failed.stderr.startswith("error: "), failed.stderr
    waited = exiting("thread", "--db", str(db), "entries", "--format", "ndjson", "--limit", "1")
    assert waited.returncode == 0 and waited.stdout.splitlines()[-1] == "exit handlers ran"


def test_a_round_in_two_processes_ends_with_nothing_left_behind(server, tmp_path):
    """A round of 100 feeds parses in a worker process (``fetch.parse_processes``); the program
    still ends at once after it, and says nothing more (no process, thread or semaphore left
    for the exit handlers to clean up, which would warn on stderr)."""
    urls = [serve_feed(server, f"/{i}.xml", f"Outlet {i}", 2) for i in range(100)]
    opml = tmp_path / "feeds.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><body>'
        + "".join(f'<outline type="rss" text="f" xmlUrl="{u}"/>' for u in urls)
        + "</body></opml>"
    )
    db = str(tmp_path / "s.sqlite")
    assert exiting("alone", "--db", db, "feeds", "import", str(opml)).returncode == 0
    out = exiting("alone", "--db", db, "update", "--no-progress")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "100 ok" in out.stdout and "exit handlers ran" not in out.stdout, out.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX (setrlimit)")
def test_a_full_disk_during_update_is_one_line_and_loses_nothing(server, tmp_path):
    """A round whose store cannot grow (here: the process may not write past a file size, as on
    a full disk) ends in one line and exit 1, not a traceback; what was stored stays."""
    import itertools
    import resource

    from werkzeug import Response

    rounds = itertools.count()

    def feed(_request):
        k = next(rounds)  # the first fetch has 2 entries; every later one 200 new, long ones
        items = [
            {
                "title": f"Story {i} of round {k}",
                "link": f"https://x.example/{k}/{i}",
                "guid": f"{k}-{i}",
                "description": f"word{i} " * 600,
            }
            for i in range(200 if k else 2)
        ]
        return Response(rss("Outlet", items), content_type="application/rss+xml")

    server.expect_request("/feed.xml").respond_with_handler(feed)
    db = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "aggregator", "--db", str(db)]
    added = subprocess.run(
        [*cmd, "feeds", "add", server.url_for("/feed.xml")], capture_output=True, timeout=60
    )
    assert added.returncode == 0, added.stderr
    limit = db.stat().st_size + 64 * 1024  # the WAL cannot outgrow this

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(
        [*cmd, "update", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_files,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"error: the store {db} cannot be written: "), out.stderr
    assert out.stderr.count("\n") == 1 and "free space" in out.stderr
    listed = subprocess.run([*cmd, "entries", "--format", "ndjson"], capture_output=True, text=True)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2, listed.stdout


def test_what_a_database_error_tells_the_user(tmp_path):
    """Errors of the store's database, as their drivers raise them: what the user is told, or
    None for a bug (shown whole)."""
    import sqlite3

    import psycopg

    from aggregator.cli import _one_line

    with pytest.raises(psycopg.OperationalError) as refused:  # a server that is not there
        psycopg.connect("host=127.0.0.1 port=1 dbname=x connect_timeout=5")
    told = _one_line(refused.value)
    assert told.startswith("the store failed: ") and told.endswith("up and reachable")
    assert "\n" not in told
    db = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (x PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as bug:
        db.execute("INSERT INTO t VALUES (1)")
    assert _one_line(bug.value) is None
    with pytest.raises(sqlite3.OperationalError) as locked:
        db.execute("BEGIN IMMEDIATE")
        other = sqlite3.connect(tmp_path / "s.sqlite", timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    # (the words a write that meets the lock says: test_store's locked-store test)
    assert _one_line(locked.value) == (
        "the store failed: database is locked; another process is writing it; try again"
    )
    other.close()
    db.close()
