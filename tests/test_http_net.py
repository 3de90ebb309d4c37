"""The asyncio network layer (aggregator.http_net) under httpcore, against real sockets on
127.0.0.1: TLS with a test CA, flow control both ways, timeouts, refused connections, a server
that closes an idle connection, and a Unix socket."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import socket
import ssl
import threading

import httpcore
import httpx
import pytest
import trustme

from aggregator import http_net
from aggregator.http_net import AsyncioBackend
from aggregator.http_transport import Transport

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=30)
BODY = os.urandom(3 * 1024 * 1024)  # well over the protocol's HIGH_WATER


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = BODY if self.path == "/big" else b"hello over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str, verify) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=Transport(limits=LIMITS, verify=verify)) as c:
            return await c.get(url)

    return asyncio.run(go())


def test_https_through_the_asyncio_layer_verifies_the_certificate(tls_server, ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    resp = _get(f"{tls_server}/", ctx)
    assert resp.status_code == 200
    assert resp.content == b"hello over tls"
    stream = resp.extensions["network_stream"]
    assert isinstance(stream, http_net.AsyncioStream)
    assert stream.get_extra_info("ssl_object") is not None


def test_the_ca_bundle_is_loaded_by_the_first_https_connection_only(tls_server, ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    plain = _RawServer(lambda conn: (conn.recv(65536), conn.sendall(b"HTTP/1.1 204 No\r\n\r\n")))

    async def go():
        transport = Transport(limits=LIMITS, verify=ctx)
        async with httpx.AsyncClient(transport=transport) as c:
            assert (await c.get(f"http://127.0.0.1:{plain.port}/")).status_code == 204
            assert callable(transport.pool._ssl_context)  # not made yet: no https so far
            assert (await c.get(f"{tls_server}/")).status_code == 200
            assert transport.pool._ssl_context is ctx

    try:
        asyncio.run(go())
    finally:
        plain.close()


def test_https_with_an_untrusted_certificate_is_a_connect_error(tls_server):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(f"{tls_server}/", True)  # the system's CAs, which never signed the test CA


def test_a_round_checks_certificates_against_certifis_bundle(tls_server, ca, tmp_path, monkeypatch):
    """A round's client (``fetch.FeedClient``) makes its TLS context as httpx's default one is
    made: Python's defaults, with certifi's CA bundle. The test CA is not in that bundle, so
    the fetch fails on the certificate; with the test CA as the bundle, the same fetch succeeds
    (the context is made by the round's first https connection, after the bundle changed)."""
    from datetime import UTC, datetime

    import certifi

    from aggregator.config import FetchSettings
    from aggregator.fetch import fetch_feed, make_client
    from aggregator.models import FetchRequest, Outcome

    settings = FetchSettings(connect_timeout=5, read_timeout=5, total_timeout=10)
    request = FetchRequest(feed_id=1, url=f"{tls_server}/")

    def fetch():
        async def go():
            async with make_client(settings) as client:
                return await fetch_feed(client, request, settings, datetime.now(UTC))

        return asyncio.run(go())

    refused = fetch()
    assert refused.outcome is Outcome.NETWORK_ERROR, refused
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setattr(certifi, "where", lambda: str(pem))
    fetched = fetch()
    assert fetched.outcome is Outcome.OK and fetched.body == b"hello over tls", fetched


def test_a_large_body_arrives_whole_over_tls(tls_server, ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    resp = _get(f"{tls_server}/big", ctx)
    assert hashlib.sha256(resp.content).digest() == hashlib.sha256(BODY).digest()


# -- the stream itself, on raw sockets -------------------------------------------------------------


class _RawServer:
    """A TCP server on 127.0.0.1 whose one connection does what ``act(conn)`` says."""

    def __init__(self, act):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()

        def serve():
            conn, _ = self.sock.accept()
            with conn:
                act(conn)
                self.done.wait(10)

        threading.Thread(target=serve, daemon=True).start()

    def close(self):
        self.done.set()
        self.sock.close()


def test_reading_pauses_while_the_reader_is_behind_and_loses_nothing():
    server = _RawServer(lambda conn: conn.sendall(BODY))

    async def go():
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port, timeout=5)
        await asyncio.sleep(0.5)  # the server has sent what the socket buffers hold, and more
        buffered = len(stream._p.buffer)
        got = bytearray()
        while len(got) < len(BODY):
            got += await stream.read(65536, timeout=5)
        await stream.aclose()
        return buffered, bytes(got)

    try:
        buffered, got = asyncio.run(go())
    finally:
        server.close()
    # a reader that never caught up would have buffered all of it: reading paused at the mark
    assert http_net.HIGH_WATER <= buffered < http_net.HIGH_WATER + 256 * 1024
    assert got == BODY


def test_a_write_the_server_never_reads_times_out():
    server = _RawServer(lambda conn: None)  # accepts, reads nothing

    async def go():
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port, timeout=5)
        try:
            for _ in range(64):  # 64 MB: more than any socket buffer holds
                await stream.write(b"x" * (1024 * 1024), timeout=0.5)
        finally:
            await stream.aclose()

    try:
        with pytest.raises(httpcore.WriteTimeout):
            asyncio.run(go())
    finally:
        server.close()


def test_a_silent_server_is_a_read_timeout_and_a_closed_one_is_seen_without_a_read():
    server = _RawServer(lambda conn: None)
    closer = _RawServer(lambda conn: conn.shutdown(socket.SHUT_WR))

    async def go():
        backend = AsyncioBackend()
        silent = await backend.connect_tcp("127.0.0.1", server.port, timeout=5)
        with pytest.raises(httpcore.ReadTimeout):
            await silent.read(1024, timeout=0.3)
        assert silent.get_extra_info("is_readable") is False
        await silent.aclose()
        closed = await backend.connect_tcp("127.0.0.1", closer.port, timeout=5)
        for _ in range(50):  # the pool asks this of an idle connection before reusing it
            if closed.get_extra_info("is_readable"):
                break
            await asyncio.sleep(0.02)
        assert closed.get_extra_info("is_readable") is True
        assert await closed.read(1024, timeout=1) == b""
        await closed.aclose()

    try:
        asyncio.run(go())
    finally:
        server.close()
        closer.close()


def test_a_refused_connection_is_a_connect_error():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    with pytest.raises(httpcore.ConnectError):
        asyncio.run(AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5))


def test_a_reset_connection_is_a_read_error():
    def reset(conn):
        conn.recv(1)  # (after the client's connect is complete: else its connect sees the RST)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # with linger 0: an RST, not a FIN

    server = _RawServer(reset)

    async def go():
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.port, timeout=5)
        await stream.write(b"x", timeout=2)
        await asyncio.sleep(0.2)
        try:
            await stream.read(1024, timeout=2)
        finally:
            await stream.aclose()

    try:
        with pytest.raises(httpcore.ReadError):
            asyncio.run(go())
    finally:
        server.close()


def test_http_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "s")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()

    def serve():
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()

    async def go():
        pool = httpcore.AsyncConnectionPool(uds=path, network_backend=AsyncioBackend())
        async with pool:
            return await pool.request("GET", "http://local/")

    try:
        resp = asyncio.run(go())
    finally:
        sock.close()
    assert resp.status == 200 and resp.content == b"ok"


def test_a_system_connect_timeout_without_a_limit_of_ours_is_a_connect_timeout():
    # ETIMEDOUT from the kernel is a TimeoutError too, also when httpcore gave no timeout
    async def opening():
        raise TimeoutError(110, "Connection timed out")

    with pytest.raises(httpcore.ConnectTimeout, match="the system's time limit"):
        asyncio.run(http_net._connected(opening(), None, None))
