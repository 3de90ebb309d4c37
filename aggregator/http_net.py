"""httpcore's network layer on asyncio's own transports (``AsyncioBackend``), in place of the
anyio one httpx picks by default.

httpcore asks its network layer for every read and write of an HTTP exchange. The anyio layer
opens a cancel scope for each (a timer, the task's cancellation bookkeeping), stops and restarts
the socket's reading around each read (an epoll change each time), and checks an idle
connection with a ``poll()`` on its socket. Here a connection is an ``asyncio.Protocol`` that
reads as data comes, into a buffer: a read that finds data waiting returns it at once, a read
that waits arms one timer, and whether an idle connection was closed by its server is known
without a system call (the protocol saw it). HTTP, TLS, redirects and the exceptions a caller
sees stay httpx's and httpcore's: this module raises httpcore's ``ConnectError``,
``ConnectTimeout``, ``ReadError``, ``ReadTimeout``, ``WriteError`` and ``WriteTimeout`` where
the anyio layer does. 1000 conditional GETs to a local nginx took a median 0.67 s of CPU through
this layer against 0.81 s through anyio's, here (bench/fetch_layers.py). (An HTTP/1.1
connection reads and writes in turn, never both at once, so one waiter per connection is
enough.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

HIGH_WATER = 256 * 1024  # buffered bytes at which reading pauses until the reader catches up
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before trying a host's next address (RFC 8305's advice)


class _Protocol(asyncio.Protocol):
    """One connection's incoming bytes and state, as asyncio reports them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # the server will send nothing more
        self.error: Exception | None = None  # why the connection was lost, when it broke
        self.lost = False
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future | None = None  # a read (or a write's drain) waiting

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= HIGH_WATER and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


# httpcore's names for a connection's details -> asyncio's
_EXTRA = {
    "ssl_object": "ssl_object",
    "client_addr": "sockname",
    "server_addr": "peername",
    "socket": "socket",
}


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    async def _wait(self, timeout: float | None) -> None:
        """Until the protocol has news (data, end, room to write); TimeoutError after
        ``timeout`` seconds. One timer, and no cancellation of the task: a timeout is the
        waiter's own exception."""
        loop = asyncio.get_running_loop()
        fut = self._p.waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, fut) if timeout is not None else None
        try:
            await fut
        finally:
            self._p.waiter = None
            if timer is not None:
                timer.cancel()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._p
        if not p.buffer and not p.eof:
            try:
                await self._wait(timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data within {_seconds(timeout)}") from None
        buf = p.buffer
        if not buf:
            if p.error is not None:
                raise httpcore.ReadError(_why(p.error))
            return b""  # the end of the stream
        if len(buf) <= max_bytes:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        if p.reading_paused and len(buf) < HIGH_WATER // 2 and not p.lost:
            p.reading_paused = False
            p.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._p
        if p.lost or p.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        p.transport.write(buffer)
        while p.writing_paused and not p.lost:
            try:
                await self._wait(timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout(f"could not send within {_seconds(timeout)}") from None
        if p.lost and p.error is not None:
            raise httpcore.WriteError(_why(p.error))

    async def aclose(self) -> None:
        transport = self._p.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        p = self._p
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    p.transport, p, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {_seconds(timeout)}") from None
        except OSError as e:  # (ssl.SSLError, a refused certificate say, is an OSError)
            await self.aclose()
            raise httpcore.ConnectError(_why(e)) from e
        if tls is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        p.transport = tls
        return self

    def get_extra_info(self, info: str) -> Any:
        p = self._p
        if info == "is_readable":  # (httpcore: an idle connection the server closed, or spoke on)
            return bool(p.buffer) or p.eof
        key = _EXTRA.get(info)
        if key is None or p.transport is None:
            return None
        return p.transport.get_extra_info(key)


SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        opening = asyncio.get_running_loop().create_connection(
            _Protocol,
            host,
            port,
            local_addr=(local_address, 0) if local_address else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
        )
        return await _connected(opening, timeout, socket_options)  # (asyncio sets TCP_NODELAY)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        opening = asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        return await _connected(opening, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    opening, timeout: float | None, options: Iterable[SocketOption] | None
) -> AsyncioStream:
    """The stream over what ``opening`` (a loop's create_*connection) connects, with httpcore's
    exceptions for what goes wrong."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await opening
    except TimeoutError:  # (ours, or the system's: ETIMEDOUT is a TimeoutError too)
        raise httpcore.ConnectTimeout(f"no connection within {_seconds(timeout)}") from None
    except OSError as e:
        raise httpcore.ConnectError(_why(e)) from e
    _set_options(transport, options)
    return AsyncioStream(protocol)


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _seconds(timeout: float | None) -> str:
    return "the system's time limit" if timeout is None else f"{timeout:g}s"


def _set_options(transport: asyncio.Transport, options: Iterable[SocketOption] | None) -> None:
    if options:
        sock = transport.get_extra_info("socket")
        for option in options:
            sock.setsockopt(*option)
