"""Fetching against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug import Response

from aggregator.config import FetchSettings
from aggregator.fetch import USER_AGENT, fetch_feed, make_client, parse_retry_after
from aggregator.models import FetchRequest, Outcome

from .conftest import rss, simple_items

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FAST = FetchSettings(connect_timeout=2, read_timeout=1, total_timeout=3, max_body_bytes=64 * 1024)


def fetch(url, settings=FAST, **req):
    async def go():
        async with make_client(settings) as client:
            return await fetch_feed(client, FetchRequest(1, url, **req), settings, NOW)

    return asyncio.run(go())


FEED = rss("Outlet", simple_items(3))


def test_ok_sends_user_agent_and_returns_body_and_validators(server):
    server.expect_request("/feed", headers={"User-Agent": USER_AGENT}).respond_with_data(
        FEED,
        content_type="application/rss+xml",
        headers={"ETag": '"v1"', "Last-Modified": "Tue, 24 Nov 2026 10:00:00 GMT"},
    )
    r = fetch(server.url_for("/feed"))
    assert r.outcome is Outcome.OK
    assert r.body == FEED.encode()
    assert r.etag == '"v1"'
    assert r.last_modified == "Tue, 24 Nov 2026 10:00:00 GMT"
    assert r.body_hash and r.status_code == 200


def test_etag_gives_304(server):
    server.expect_request("/feed", headers={"If-None-Match": '"v1"'}).respond_with_data(
        "", status=304
    )
    r = fetch(server.url_for("/feed"), etag='"v1"')
    assert r.outcome is Outcome.NOT_MODIFIED
    assert r.body is None


def test_a_validator_with_bytes_beyond_ascii_is_sent_back_as_it_came(server):
    """A server's ETag in latin-1 (servers send such bytes) is stored, then sent back with
    the same bytes, and the feed answers 304 (not a failure to encode the header)."""
    etag = '"caf\u00e9-v1"'
    server.expect_request("/feed", headers={"If-None-Match": etag}).respond_with_data(
        "", status=304
    )
    server.expect_request("/feed").respond_with_data(FEED, headers={"ETag": etag})
    first = fetch(server.url_for("/feed"))
    assert first.outcome is Outcome.OK and first.etag == etag
    second = fetch(server.url_for("/feed"), etag=first.etag)
    assert second.outcome is Outcome.NOT_MODIFIED


def test_repeated_headers_are_read_together(server):
    server.expect_request("/feed").respond_with_response(
        Response(FEED, headers=[("Cache-Control", "public"), ("Cache-Control", "max-age=600")])
    )
    r = fetch(server.url_for("/feed"))
    assert r.outcome is Outcome.OK and r.max_age_seconds == 600


def test_last_modified_gives_304(server):
    lm = "Tue, 24 Nov 2026 10:00:00 GMT"
    server.expect_request("/feed", headers={"If-Modified-Since": lm}).respond_with_data(
        "", status=304
    )
    r = fetch(server.url_for("/feed"), last_modified=lm)
    assert r.outcome is Outcome.NOT_MODIFIED


def test_same_body_hash_is_not_modified(server):
    server.expect_request("/feed").respond_with_data(FEED)
    first = fetch(server.url_for("/feed"))
    second = fetch(server.url_for("/feed"), body_hash=first.body_hash)
    assert first.outcome is Outcome.OK
    assert second.outcome is Outcome.NOT_MODIFIED
    assert second.body is None


@pytest.mark.parametrize(
    ("status", "permanent"), [(301, True), (308, True), (302, False), (307, False)]
)
def test_redirects(server, status, permanent):
    server.expect_request("/old").respond_with_data("", status=status, headers={"Location": "/new"})
    server.expect_request("/new").respond_with_data(FEED)
    r = fetch(server.url_for("/old"))
    assert r.outcome is Outcome.OK
    assert r.url == server.url_for("/new")
    assert r.permanent_url == (server.url_for("/new") if permanent else None)


def test_permanent_then_temporary_redirect_is_not_permanent(server):
    server.expect_request("/a").respond_with_data("", status=301, headers={"Location": "/b"})
    server.expect_request("/b").respond_with_data("", status=302, headers={"Location": "/c"})
    server.expect_request("/c").respond_with_data(FEED)
    r = fetch(server.url_for("/a"))
    assert r.outcome is Outcome.OK and r.permanent_url is None


def test_a_cookie_a_redirect_sets_goes_to_the_next_hop_and_no_further(server):
    """Some sites set a cookie on a redirect and want it back on its target (a consent or
    session hop). The exchange carries it; no other feed's request sees it."""

    def start(request):
        return Response(
            "", status=302, headers={"Location": "/feed", "Set-Cookie": "hop=1; Path=/"}
        )

    def feed(request):
        if request.headers.get("Cookie") != "hop=1":
            return Response("no cookie", status=403)
        return Response(FEED, content_type="application/rss+xml")

    server.expect_request("/start").respond_with_handler(start)
    server.expect_request("/feed").respond_with_handler(feed)

    async def go():
        async with make_client(FAST) as client:
            via = await fetch_feed(client, FetchRequest(1, server.url_for("/start")), FAST, NOW)
            direct = await fetch_feed(client, FetchRequest(2, server.url_for("/feed")), FAST, NOW)
            return via, direct

    via, direct = asyncio.run(go())
    assert via.outcome is Outcome.OK and via.url.endswith("/feed") and via.body == FEED.encode()
    assert direct.outcome is Outcome.HTTP_ERROR and direct.status_code == 403


def test_redirect_loop_ends(server):
    server.expect_request("/loop").respond_with_data("", status=302, headers={"Location": "/loop"})
    r = fetch(server.url_for("/loop"))
    assert r.outcome is Outcome.NETWORK_ERROR
    assert "redirects" in r.error


def test_redirect_to_non_http_scheme_is_refused(server):
    server.expect_request("/x").respond_with_data(
        "", status=301, headers={"Location": "file:///etc/passwd"}
    )
    r = fetch(server.url_for("/x"))
    assert r.outcome is Outcome.NETWORK_ERROR
    assert "non-HTTP" in r.error


def test_410_is_gone(server):
    server.expect_request("/feed").respond_with_data("gone", status=410)
    assert fetch(server.url_for("/feed")).outcome is Outcome.GONE


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds(server, status):
    server.expect_request("/feed").respond_with_data(
        "slow down", status=status, headers={"Retry-After": "120"}
    )
    r = fetch(server.url_for("/feed"))
    assert r.outcome is Outcome.HTTP_ERROR
    assert r.status_code == status
    assert r.retry_after == NOW + timedelta(seconds=120)


def test_retry_after_http_date_and_caps():
    assert parse_retry_after("Wed, 25 Nov 2026 13:00:00 GMT", NOW) == NOW + timedelta(hours=1)
    assert parse_retry_after("99999999", NOW) == NOW + timedelta(days=7)
    assert parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT", NOW) == NOW
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_500_is_http_error(server):
    server.expect_request("/feed").respond_with_data("boom", status=500)
    r = fetch(server.url_for("/feed"))
    assert r.outcome is Outcome.HTTP_ERROR
    assert r.error.startswith("HTTP 500")


def test_slow_server_times_out(server):
    def slow(request):
        time.sleep(2.5)
        return Response(FEED)

    server.expect_request("/slow").respond_with_handler(slow)
    started = time.monotonic()
    r = fetch(server.url_for("/slow"))
    assert r.outcome is Outcome.TIMEOUT
    assert time.monotonic() - started < 2.4


def test_drip_feed_hits_total_deadline(server):
    def drip(request):
        def gen():
            for _ in range(100):
                yield b"<"
                time.sleep(0.3)

        return Response(gen(), content_type="application/rss+xml")

    server.expect_request("/drip").respond_with_handler(drip)
    settings = FetchSettings(
        connect_timeout=1, read_timeout=1, total_timeout=1.5, max_body_bytes=1 << 20
    )
    started = time.monotonic()
    r = fetch(server.url_for("/drip"), settings=settings)
    assert r.outcome is Outcome.TIMEOUT
    assert time.monotonic() - started < 3


def test_endless_body_stops_at_cap(server):
    def endless(request):
        def gen():
            chunk = b"x" * 8192
            while True:
                yield chunk

        return Response(gen(), content_type="application/rss+xml")

    server.expect_request("/endless").respond_with_handler(endless)
    r = fetch(server.url_for("/endless"))
    assert r.outcome is Outcome.TOO_LARGE
    assert r.body is None


def test_declared_content_length_over_cap_is_refused_early(server):
    server.expect_request("/big").respond_with_data(b"x" * (FAST.max_body_bytes + 1))
    assert fetch(server.url_for("/big")).outcome is Outcome.TOO_LARGE


def test_gzip_body_is_decoded(server):
    server.expect_request("/gz").respond_with_data(
        gzip.compress(FEED.encode()), headers={"Content-Encoding": "gzip"}
    )
    r = fetch(server.url_for("/gz"))
    assert r.outcome is Outcome.OK and r.body == FEED.encode()


def test_deflate_body_is_decoded_both_flavours(server):
    raw = zlib.compressobj(wbits=-15)
    raw_deflate = raw.compress(FEED.encode()) + raw.flush()
    server.expect_request("/z").respond_with_data(
        zlib.compress(FEED.encode()), headers={"Content-Encoding": "deflate"}
    )
    server.expect_request("/raw").respond_with_data(
        raw_deflate, headers={"Content-Encoding": "deflate"}
    )
    assert fetch(server.url_for("/z")).body == FEED.encode()
    assert fetch(server.url_for("/raw")).body == FEED.encode()


def test_gzip_bomb_stops_at_decoded_cap(server):
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KB
    assert len(bomb) < 100_000
    server.expect_request("/bomb").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    r = fetch(server.url_for("/bomb"))
    assert r.outcome is Outcome.TOO_LARGE


def test_connection_refused_is_network_error():
    r = fetch("http://127.0.0.1:9/feed")
    assert r.outcome is Outcome.NETWORK_ERROR
    assert r.error


def test_private_addresses_can_be_refused(server):
    server.expect_request("/feed").respond_with_data(FEED)
    strict = FetchSettings(
        connect_timeout=2, read_timeout=1, total_timeout=3, allow_private_addresses=False
    )
    r = fetch(server.url_for("/feed"), settings=strict)
    assert r.outcome is Outcome.NETWORK_ERROR
    assert "non-public address 127.0.0.1" in r.error and "allow_private_addresses" in r.error
    assert len(server.log) == 0  # refused before connecting
    assert fetch(server.url_for("/feed")).outcome is Outcome.OK  # on by default


def test_redirect_into_a_private_address_is_refused_too():
    import asyncio

    from aggregator.fetch import refuse_private

    assert "non-public" in asyncio.run(refuse_private("http://10.1.2.3/x"))
    assert "non-public" in asyncio.run(refuse_private("http://[::1]/x"))
    assert "non-public" in asyncio.run(refuse_private("http://169.254.169.254/latest/meta-data"))
    assert asyncio.run(refuse_private("http://8.8.8.8/x")) is None  # numeric: no lookup, no traffic


# -- request URLs: the plain ones split without httpx's parser, the same as it splits them -------

_URL_CHARS = "aZ09-._~!$&'()*+,;=:@/?#%[] é\u00a0\t"


def _httpx_target(url):
    import httpx

    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "invalid"
    return u.raw_scheme, u.raw_host, u.port, u.raw_path, u.netloc


def _target_or_invalid(url):
    import httpx

    from aggregator.fetch import _target

    try:
        return _target(url)
    except httpx.InvalidURL:
        return "invalid"


@pytest.mark.parametrize(
    "url",
    [
        "http://Example.COM:80/a/b?q=1&x=%41#frag",
        "https://news.example.org/feeds/rss.xml",
        "http://127.0.0.1:8080/f/1.xml",
        "http://999.1.1.1/x",
        "http://01.2.3.4/x",
        "http://1.2.3/x",
        "https://h:443/p?",
        "http://h:0080",
        "http://h:65536/",
        "http://h/p?a=b?c/d",
        "http://h/p%zz",
        "http://h/a/./b",
        "http://h/a/../b",
        "http://h/a/..",
        "http://h/.well-known/feed",
        "http://h/%7Euser/",
        "http://h/a b",
        "http://h/p;x=1,2",
        "http://h/p#",
        "http://bücher.example/feed",
        "HTTP://h/feed",
        "http://h/p#a b",
    ],
)
def test_plain_request_urls_split_as_httpx_splits_them(url):
    assert _target_or_invalid(url) == _httpx_target(url)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(["http", "https", "HTTP"]),
    host=st.lists(
        st.one_of(st.from_regex(r"[a-zA-Z0-9-]{1,6}", fullmatch=True), st.integers(0, 300)),
        min_size=1,
        max_size=4,
    ),
    port=st.one_of(st.none(), st.from_regex(r"[0-9]{1,6}", fullmatch=True)),
    rest=st.text(alphabet=_URL_CHARS, max_size=30),
)
def test_request_urls_split_as_httpx_splits_them(scheme, host, port, rest):
    url = f"{scheme}://{'.'.join(map(str, host))}{':' + port if port else ''}/{rest}"
    assert _target_or_invalid(url) == _httpx_target(url)
