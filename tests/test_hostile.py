"""Servers that misbehave on purpose: each ends within bounds with a typed error, and the
rest of the round completes."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from werkzeug import Response

from aggregator.api import Aggregator
from aggregator.config import FetchSettings, Settings
from aggregator.models import Outcome

from .conftest import rss, simple_items

SETTINGS = Settings(
    fetch=FetchSettings(
        connect_timeout=2,
        read_timeout=1.5,
        total_timeout=3,
        max_body_bytes=256 * 1024,
        concurrency=16,
    )
)


class RawServer:
    """A TCP server on 127.0.0.1 that answers each path with raw bytes or behaviour."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            path = data.split(b" ", 2)[1].decode()
            body = rss("Raw", simple_items(3, "Raw")).encode()
            if path == "/reset":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + body[:200])
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            elif path == "/bad-length":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\n" + body)
            elif path == "/short-length":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % (len(body) * 2)
                    + body
                )
            elif path == "/garbage":
                conn.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            elif path == "/silent":
                time.sleep(10)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.sock.close()


@pytest.fixture
def raw():
    s = RawServer()
    yield s
    s.close()


def test_hostile_round(server, raw, tmp_path):
    good = [server.url_for(f"/good{i}.xml") for i in range(5)]
    for i in range(5):
        server.expect_request(f"/good{i}.xml").respond_with_data(
            rss(f"G{i}", simple_items(4, f"G{i}"))
        )

    def endless(request):
        def gen():
            while True:
                yield b"<item>" * 1000

        return Response(gen(), content_type="application/rss+xml")

    def drip(request):
        def gen():
            for _ in range(60):
                yield b" "
                time.sleep(1)

        return Response(gen(), content_type="application/rss+xml")

    import gzip

    bomb = gzip.compress(b"\0" * (40 * 1024 * 1024))
    server.expect_request("/endless").respond_with_handler(endless)
    server.expect_request("/drip").respond_with_handler(drip)
    server.expect_request("/bomb").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    server.expect_request("/wrong-type").respond_with_data(
        rss("W", simple_items(2, "W")), content_type="image/png"
    )
    server.expect_request("/empty").respond_with_data(b"", status=200)
    server.expect_request("/to-ftp").respond_with_data(
        "", status=302, headers={"Location": "ftp://example.com/feed"}
    )
    # a chain of 10,000 distinct redirects: we give up after fetch.max_redirects hops
    server.expect_request("/chain/0").respond_with_handler(
        lambda r: Response(status=301, headers={"Location": "/chain/1"})
    )
    for i in range(1, 8):
        server.expect_request(f"/chain/{i}").respond_with_handler(
            lambda r, i=i: Response(status=301, headers={"Location": f"/chain/{i + 1}"})
        )
    hostile = {
        "endless": (server.url_for("/endless"), Outcome.TOO_LARGE),
        "drip": (server.url_for("/drip"), Outcome.TIMEOUT),
        "bomb": (server.url_for("/bomb"), Outcome.TOO_LARGE),
        "wrong-type": (
            server.url_for("/wrong-type"),
            Outcome.OK,
        ),  # content decides, not the header
        "empty": (server.url_for("/empty"), Outcome.PARSE_ERROR),
        "to-ftp": (server.url_for("/to-ftp"), Outcome.NETWORK_ERROR),
        "chain": (server.url_for("/chain/0"), Outcome.NETWORK_ERROR),
        "reset": (raw.url("/reset"), Outcome.NETWORK_ERROR),
        "bad-length": (raw.url("/bad-length"), Outcome.NETWORK_ERROR),
        "short-length": (raw.url("/short-length"), Outcome.NETWORK_ERROR),
        "garbage": (raw.url("/garbage"), Outcome.NETWORK_ERROR),
        "silent": (raw.url("/silent"), Outcome.TIMEOUT),
    }
    with Aggregator.open(db=tmp_path / "s.sqlite", settings=SETTINGS) as agg:
        for url in good + [u for u, _ in hostile.values()]:
            agg.add_feed(url, check=False)
        started = time.monotonic()
        summary = agg.update()
        took = time.monotonic() - started
        by_url = {r.url: r for r in summary.results}
        got = {}
        for name, (url, _) in hostile.items():
            feed = agg.feed(url)
            got[name] = Outcome(feed.last_status)
        assert got == {name: outcome for name, (_, outcome) in hostile.items()}, {
            n: (got[n], agg.feed(u).last_error) for n, (u, _) in hostile.items()
        }
        for name, (url, outcome) in hostile.items():
            if outcome.failed:
                assert agg.feed(url).last_error, name
        assert sum(1 for u in good if by_url[u].outcome is Outcome.OK) == 5
        assert summary.new_entries == 5 * 4 + 2
    assert took < SETTINGS.fetch.total_timeout + 4, took
