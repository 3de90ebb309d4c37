"""A keep-alive connection pool for httpx whose cost per request does not grow with its size.

httpcore's ``AsyncConnectionPool`` (httpx's default) re-examines every connection it holds on
each request: it walks the list, asks each idle connection whether it expired (a ``poll()`` on
its socket) and reassigns queued requests. A round of 1,000 feeds at 16 connections measured
~27 socket checks per request, and that walk, not the HTTP exchange, was most of the CPU of a
round where every feed answered 304. This pool keeps idle connections per origin in a stack, so
a request checks only the one connection it takes.

- ``max_connections`` requests are in flight at once (an asyncio semaphore; a request waits at
  most the pool timeout for its turn, then fails with ``httpcore.PoolTimeout``).
- At most ``max_idle`` connections are kept open between requests, the least recently used
  closed first, each for at most ``keepalive_expiry`` seconds.
- A connection goes back to the pool only when its response was read to the end (HTTP/1.1
  ``IDLE``); otherwise it is closed.
- A GET or HEAD that fails on a reused connection before its response starts (the server
  closed the connection meanwhile) is sent once more on a new connection, as browsers do.

Each connection is httpcore's own ``AsyncHTTPConnection``; the HTTP itself, TLS, timeouts and
exceptions are httpcore's, over asyncio's transports (``http_net.AsyncioBackend``) unless a
``network_backend`` is given, and with asyncio locks in place of its anyio ones
(``_asyncio_locks``). A round's ``fetch.FeedClient`` sends httpcore's requests to the pool
directly; ``http_transport.Transport`` plugs it into httpx's client API (the tests use it
that way).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque

import httpcore
from httpcore._synchronization import AsyncLock as _AnyioLock

from .http_net import AsyncioBackend

# what a reused keep-alive connection raises when the server closed it before our request
_STALE = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)
_RETRYABLE = (b"GET", b"HEAD")


class ConnectionPool:
    """httpcore's request interface (``handle_async_request``, ``aclose``) over per-origin
    stacks of idle ``httpcore.AsyncHTTPConnection``s."""

    def __init__(
        self,
        *,
        ssl_context,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float | None,
        network_backend=None,
    ):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # a context, or what makes one when the first https connection opens (loading the CA
        # bundle costs ~30 ms, and a round of plain-http feeds need not wait for it)
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max(0, max_idle)
        self._expiry = keepalive_expiry
        self._backend = network_backend or AsyncioBackend()
        # (scheme, host, port) -> idle connections, most recently used last; the dict's order
        # is the order origins were last used, so the first one holds the least recently used
        self._idle: OrderedDict[tuple, deque] = OrderedDict()
        self._idle_count = 0
        self.opened = 0  # connections opened since the pool was made (for tests and figures)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        slots = self._slots
        if slots.locked():  # (a free slot is taken at once: no timer for it)
            wait = request.extensions.get("timeout", {}).get("pool")
            try:
                async with asyncio.timeout(wait):
                    await slots.acquire()
            except TimeoutError:
                raise httpcore.PoolTimeout(f"no connection free within {wait}s") from None
        else:
            await slots.acquire()
        origin = request.url.origin
        conn = None
        try:
            conn, reused = await self._take(origin)
            try:
                if not reused:
                    await self._open(conn, request)
                response = await conn.handle_async_request(request)
            except _STALE:
                await conn.aclose()
                if not (reused and request.method in _RETRYABLE):
                    raise
                conn, reused = self._new(origin), False
                await self._open(conn, request)
                response = await conn.handle_async_request(request)
            if not reused:  # (for a connection _open left to httpcore; a reused one has them)
                _asyncio_locks(conn)
        except BaseException:
            self._slots.release()
            if conn is not None:
                await _close_quietly(conn)
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_Body(self, origin, conn, response.stream),
            extensions=response.extensions,
        )

    @property
    def idle(self) -> int:
        """Connections open and waiting for a request."""
        return self._idle_count

    def _new(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        self.opened += 1
        if callable(self._ssl_context) and origin.scheme == b"https":
            self._ssl_context = self._ssl_context()
        conn = httpcore.AsyncHTTPConnection(
            origin=origin,
            ssl_context=None if callable(self._ssl_context) else self._ssl_context,
            keepalive_expiry=self._expiry,
            network_backend=self._backend,
        )
        _asyncio_locks(conn)
        return conn

    async def _open(self, conn: httpcore.AsyncHTTPConnection, request: httpcore.Request) -> None:
        """Connect a new ``conn`` and give it its HTTP/1.1 connection, with asyncio locks
        (``_asyncio_locks``), before its first request. Left to itself, httpcore does both
        within that request, and the HTTP/1.1 connection's first lock is then one of anyio's:
        acquiring it imported anyio's asyncio backend (44 ms, in every round's process) and
        each new connection's first request went through anyio. An httpcore whose connection
        is not made as this expects (the names, HTTP/2) is left to do it itself."""
        connect = getattr(conn, "_connect", None)
        if (
            connect is None
            or getattr(conn, "_connection", False) is not None
            or getattr(conn, "_http2", True)
        ):
            return
        try:
            stream = await connect(request)
        except BaseException:
            conn._connect_failed = True
            raise
        conn._connection = httpcore.AsyncHTTP11Connection(
            origin=conn._origin, stream=stream, keepalive_expiry=conn._keepalive_expiry
        )
        _asyncio_locks(conn)

    async def _take(self, origin: httpcore.Origin) -> tuple[httpcore.AsyncHTTPConnection, bool]:
        key = _key(origin)
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if not stack:  # no empty stacks: eviction takes the first stack's oldest
                del self._idle[key]
            if conn.is_available() and not conn.has_expired():
                return conn, True
            await _close_quietly(conn)
        return self._new(origin), False

    async def _give_back(self, origin: httpcore.Origin, conn: httpcore.AsyncHTTPConnection):
        try:
            if not conn.is_idle() or self._max_idle == 0:
                await _close_quietly(conn)
                return
            key = _key(origin)
            stack = self._idle.setdefault(key, deque())
            self._idle.move_to_end(key)
            stack.append(conn)
            self._idle_count += 1
            while self._idle_count > self._max_idle:
                oldest_key, oldest = next(iter(self._idle.items()))
                victim = oldest.popleft()
                self._idle_count -= 1
                if not oldest:
                    del self._idle[oldest_key]
                await _close_quietly(victim)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        idle, self._idle, self._idle_count = self._idle, OrderedDict(), 0
        for stack in idle.values():
            for conn in stack:
                await _close_quietly(conn)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class _Body:
    """A response's body; closing it hands the connection back (or closes it)."""

    def __init__(self, pool: ConnectionPool, origin, conn, stream):
        self._pool, self._origin, self._conn, self._stream = pool, origin, conn, stream
        self._closed = False

    def __aiter__(self):
        return aiter(self._stream)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            await self._pool._give_back(self._origin, self._conn)


class _Lock:
    """httpcore's lock interface (``async with``) over an ``asyncio.Lock``."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> _Lock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        self._lock.release()


def _asyncio_locks(conn: httpcore.AsyncHTTPConnection) -> None:
    """Give ``conn`` (and its HTTP/1.1 connection, once it has one) asyncio locks in place of
    httpcore's. Those are anyio's, whose every acquire yields to the event loop even when the
    lock is free (a cancellation checkpoint): three per request, and here a connection serves
    one request at a time, so they are never contended. 1000 conditional GETs took 0.24 s of
    CPU with them, 0.21 s without (the same 304s from the bench's nginx). Only locks that are
    still httpcore's own and not held are replaced; an httpcore that names them otherwise
    keeps its own."""
    for owner, name in (
        (conn, "_request_lock"),
        (getattr(conn, "_connection", None), "_state_lock"),
    ):
        lock = getattr(owner, name, None)
        if type(lock) is _AnyioLock and not _held(lock):
            setattr(owner, name, _Lock())


def _held(lock: _AnyioLock) -> bool:
    inner = getattr(lock, "_anyio_lock", None)
    return inner is not None and inner.locked()


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port


async def _close_quietly(conn: httpcore.AsyncHTTPConnection) -> None:
    with contextlib.suppress(Exception):  # closing a broken socket can fail; it is gone anyway
        await conn.aclose()
