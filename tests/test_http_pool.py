"""The keep-alive pool (aggregator.http_pool) against a real HTTP/1.1 server on 127.0.0.1 that
counts the connections it accepts and can misbehave the way servers do with idle connections."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import msgspec
import pytest

from aggregator.config import FetchSettings
from aggregator.fetch import fetch_feed, make_client
from aggregator.http_transport import Transport
from aggregator.models import FetchRequest, Outcome

from .conftest import NOW, rss, simple_items

FEED = rss("Outlet", simple_items(3)).encode()
FAST = FetchSettings(
    connect_timeout=2, read_timeout=2, total_timeout=5, max_body_bytes=64 * 1024, concurrency=8
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a response says otherwise

    def setup(self):
        super().setup()
        self.served = 0
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.served += 1
        path = self.path
        if path.startswith("/304"):
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        elif path.startswith("/feed"):
            self._send(200, FEED)
        elif path.startswith("/close-after"):
            # answers, then drops the connection without saying so (an idle timeout)
            self._send(200, FEED)
            self.close_connection = True
        elif path.startswith("/drop-second"):
            # answers the first request of a connection; drops the connection on the next
            # one without a word, as a server does when its idle timeout races our request
            if self.served > 1:
                self.close_connection = True
                return
            self._send(200, FEED)
        elif path.startswith("/drop-always"):
            self.close_connection = True
        elif path.startswith("/big"):
            self._send(200, b"<rss>" + b"x" * 200_000 + b"</rss>")
        elif path.startswith("/error-page"):
            self._send(500, b"<html>" + b"oops " * 1000 + b"</html>")
        else:
            self._send(404, b"no")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.connections = 0

    def handle_error(self, request, client_address):
        pass  # clients that close mid-body are part of these tests

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def counting():
    servers = []

    def start() -> CountingServer:
        srv = CountingServer()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@dataclasses.dataclass
class Stats:
    opened: int  # connections the pool opened
    idle: int  # connections kept open once the fetches were done


def run_fetches(urls, settings=FAST, etag=None, concurrency=None):
    """fetch_feed over ``urls`` with one client, at most ``concurrency`` at once."""

    async def go():
        limit = asyncio.Semaphore(concurrency or settings.concurrency)
        async with make_client(settings) as client:

            async def one(i, url):
                async with limit:
                    return await fetch_feed(client, FetchRequest(i, url, etag=etag), settings, NOW)

            results = await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
            pool = client.pool
            return results, Stats(pool.opened, pool.idle)

    return asyncio.run(go())


def test_conditional_gets_reuse_connections(counting):
    srv = counting()
    results, pool = run_fetches([srv.url(f"/304/{i}") for i in range(200)], etag='"v1"')
    assert {r.outcome for r in results} == {Outcome.NOT_MODIFIED}
    # 200 feeds of one host at 8 at once: 8 connections at most, not one per feed
    assert srv.connections <= FAST.concurrency
    assert pool.opened == srv.connections


@pytest.mark.parametrize(
    "path, n, outcome, connections",
    [
        # an error page is read to its end: the connection serves the next request
        ("/error-page", 5, Outcome.HTTP_ERROR, 1),
        # a server closing idle connections costs a new connection, not a failure
        ("/close-after", 20, Outcome.OK, 20),
        # a request dropped on a reused connection is sent again, once, on a new one
        ("/drop-second", 10, Outcome.OK, 10),
        # a request dropped on a new connection is not sent again
        ("/drop-always", 3, Outcome.NETWORK_ERROR, 3),
    ],
)
def test_one_after_another(counting, path, n, outcome, connections):
    srv = counting()
    results, stats = run_fetches([srv.url(f"{path}/{i}") for i in range(n)], concurrency=1)
    assert {r.outcome for r in results} == {outcome}
    assert srv.connections == connections and stats.opened == connections


def test_body_left_unread_closes_its_connection_and_the_next_feed_still_works(counting):
    srv = counting()
    small = msgspec.structs.replace(FAST, max_body_bytes=10_000)
    results, pool = run_fetches([srv.url("/big"), srv.url("/feed")], settings=small, concurrency=1)
    assert [r.outcome for r in results] == [Outcome.TOO_LARGE, Outcome.OK]
    assert srv.connections == 2
    assert pool.idle == 1


def test_idle_connections_are_capped_least_recently_used_first(counting):
    servers = [counting() for _ in range(4)]

    async def go():
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=30)
        async with httpx.AsyncClient(transport=Transport(limits=limits)) as client:
            for srv in servers:
                assert (await client.get(srv.url("/feed"))).status_code == 200
            pool = client._transport.pool
            assert pool.idle == 2
            for srv in servers[2:]:  # the two most recent hosts kept their connection
                await client.get(srv.url("/feed"))
            assert pool.opened == 4
            await client.get(servers[0].url("/feed"))  # evicted: connects again
            assert pool.opened == 5

    asyncio.run(go())
    assert [s.connections for s in servers] == [2, 1, 1, 1]


def test_waiting_for_a_connection_ends_at_the_pool_timeout(counting):
    srv = counting()

    async def go():
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(5, pool=0.2)
        async with httpx.AsyncClient(transport=Transport(limits=limits), timeout=timeout) as c:
            async with c.stream("GET", srv.url("/feed")):  # holds the only connection
                with pytest.raises(httpx.PoolTimeout):
                    await c.get(srv.url("/feed"))
            # released: the next request gets it
            assert (await c.get(srv.url("/feed"))).status_code == 200

    asyncio.run(go())
    assert srv.connections == 2  # the first stream was closed unread: its connection too


def test_idle_cap_with_a_host_whose_connections_are_all_in_use(counting):
    """A host whose every idle connection was taken must not hold up the eviction of others."""
    a, b = counting(), counting()

    async def go():
        limits = httpx.Limits(max_connections=3, max_keepalive_connections=1, keepalive_expiry=30)
        async with httpx.AsyncClient(transport=Transport(limits=limits)) as client:
            await client.get(a.url("/feed"))  # a's connection is idle
            async with client.stream("GET", a.url("/feed")) as held:  # ... and now in use
                b1, b2 = await asyncio.gather(
                    client.get(b.url("/feed")), client.get(b.url("/feed"))
                )
                assert b1.status_code == b2.status_code == 200
                await held.aread()
            assert client._transport.pool.idle == 1

    asyncio.run(go())


def test_connections_lock_with_asyncio_locks_once_they_served_a_request(counting):
    """httpcore's locks are anyio's, and every acquire yields to the event loop; the pool swaps
    in asyncio ones. If httpcore renames them, this fails: the swap no longer happens."""
    from aggregator import http_pool

    srv = counting()

    async def go():
        async with make_client(FAST) as client:
            for i in range(3):
                r = await fetch_feed(client, FetchRequest(i, srv.url("/feed")), FAST, NOW)
                assert r.outcome is Outcome.OK
            return [c for stack in client.pool._idle.values() for c in stack]

    idle = asyncio.run(go())
    assert len(idle) == 1  # one connection, reused
    (conn,) = idle
    assert type(conn._request_lock) is http_pool._Lock
    assert type(conn._connection._state_lock) is http_pool._Lock


def test_new_connections_never_touch_anyio():
    """A new connection gets its HTTP/1.1 layer with asyncio locks before its first request
    (ConnectionPool._open): a fresh interpreter that fetches never imports anyio's asyncio
    backend, which httpcore's first lock acquire imported (44 ms)."""
    import subprocess
    import sys

    code = """
import asyncio, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from aggregator.config import FetchSettings
from aggregator.fetch import fetch_feed, make_client
from aggregator.models import FetchRequest
from datetime import UTC, datetime

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(304); self.end_headers()

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
s = FetchSettings(concurrency=4, per_host=0)

async def go():
    async with make_client(s) as c:
        rs = await asyncio.gather(*(
            fetch_feed(c, FetchRequest(i, f"http://127.0.0.1:{srv.server_address[1]}/{i}",
                                       etag='"x"'), s, datetime.now(UTC))
            for i in range(12)))
        return {r.outcome.value for r in rs}, c.pool.opened

print(asyncio.run(go()), "anyio._backends._asyncio" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "({'not_modified'}, 4) False"  # (4 connections: the pool's 4 slots)
