"""HTTP fetching with httpx. Every way a fetch can end becomes a FetchResult with an Outcome;
nothing raises out of ``fetch_feed`` for a feed's own failure.

    make_client(settings) -> FeedClient              one per round, modest connection pool
    fetch_feed(client, request, settings, now) -> FetchResult

- Conditional GET (If-None-Match / If-Modified-Since); a 304 or an unchanged body hash is
  NOT_MODIFIED and costs no parsing.
- Redirects followed by hand, at most ``max_redirects`` hops, http(s) only; ``permanent_url`` is
  set when every hop was 301/308, so the caller can update the stored URL.
- Connect/read timeouts from httpx, plus a deadline over the whole exchange (a server dripping
  one byte a second ends at ``total_timeout``).
- gzip/deflate decoded here, chunk by chunk, with the size cap applied to the decoded size:
  a gzip bomb stops at ``max_body_bytes`` having produced at most that many bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import re
import socket
import ssl
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpcore

from ._version import __version__
from .config import FetchSettings
from .http_pool import ConnectionPool
from .models import FetchRequest, FetchResult, Outcome
from .normalize import DEFAULT_PORTS

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"aggregator/{__version__} (news-feed aggregator; +python-httpx)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
REDIRECTS = {301, 302, 303, 307, 308}
PERMANENT = {301, 308}
BODILESS = {204, 304}  # statuses whose responses end with their headers (RFC 9112, 6.3)
MAX_RETRY_AFTER = timedelta(days=7)
# What an exchange raises: httpcore's exceptions, as the pool and its connections raise them,
# and httpx's, from its parsing of a URL ``_target`` leaves to it. httpx itself is imported only
# where a fetch needs it (such a URL, a redirect's cookies): a round's requests go through
# httpcore, and importing httpx (with http.cookiejar, urllib.request and email) took 30-50 ms of
# CPU of each round's start here. Before it is imported, none of its exceptions can be raised.
_CORE_TIMEOUTS = (httpcore.TimeoutException,)
_CORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


def _httpx():
    import httpx

    return httpx


def timeouts() -> tuple[type[BaseException], ...]:
    """The exceptions of a fetch that timed out."""
    httpx = sys.modules.get("httpx")
    return _CORE_TIMEOUTS if httpx is None else (*_CORE_TIMEOUTS, httpx.TimeoutException)


def network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a fetch that failed on the network or in HTTP (a bad URL among them)."""
    httpx = sys.modules.get("httpx")
    return _CORE_ERRORS if httpx is None else (*_CORE_ERRORS, httpx.HTTPError, httpx.InvalidURL)


def user_agent(settings: FetchSettings) -> str:
    if settings.user_agent_contact:
        return f"{USER_AGENT[:-1]}; {settings.user_agent_contact})"
    return USER_AGENT


class FeedClient:
    """What a round fetches with: the keep-alive pool (``http_pool.ConnectionPool``, one per
    round) with the round's headers and timeouts, and ``stream`` as httpx.AsyncClient has it,
    minus what a round does not use. httpx.AsyncClient's layer is left out: redirects are
    followed by hand (``_exchange``, which also carries the cookies a redirect sets to its next
    hop), and a round has no use for a cookie jar shared by every feed, auth or event hooks;
    that layer cost ~0.17 s of CPU per 1000 conditional GETs here, over a 0.55 s exchange
    (0.72 -> 0.55 s). So are httpx's request and response objects (header normalizing, the
    transport's conversions to and from httpcore's, byte streams wrapped three deep): 1000
    conditional GETs took 1,475M instructions with them, 1,231M without (callgrind).
    ``stream`` builds httpcore's request (the URL split by ``_target``) and yields a
    ``Response`` of its own; what goes wrong raises httpcore's exceptions, or httpx's for a
    URL it cannot parse (``timeouts`` and ``network_errors``)."""

    def __init__(self, settings: FetchSettings):
        self.timeout = {  # (httpcore's request extension)
            "connect": settings.connect_timeout,
            "read": settings.read_timeout,
            "write": settings.read_timeout,
            "pool": settings.total_timeout,
        }
        self.pool = ConnectionPool(
            ssl_context=ssl_context,
            max_connections=settings.concurrency,
            max_idle=settings.concurrency,
            keepalive_expiry=30,
        )
        self.headers = [
            (b"User-Agent", user_agent(settings).encode("ascii", "replace")),
            (b"Accept", ACCEPT.encode()),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, headers: dict[str, str] | None = None):
        """The response to ``method`` ``url`` with the client's headers and ``headers``, its
        body unread; leaving the block hands its connection back (or closes it). httpx's
        exceptions: httpx.InvalidURL for a URL it cannot parse, httpx.UnsupportedProtocol for
        a scheme other than http(s); httpcore's for the exchange (see ``network_errors``)."""
        scheme, host, port, target, netloc = _target(url)
        if scheme not in (b"http", b"https"):
            raise _httpx().UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme.decode()}://'."
                if scheme
                else "Request URL is missing an 'http://' or 'https://' protocol."
            )
        if not host:
            raise _httpx().InvalidURL(f"no host in the URL {url[:200]!r}")
        sent = [(b"Host", netloc), *self.headers]
        if headers:
            sent += [(k.encode("ascii"), _header_bytes(v)) for k, v in headers.items()]
        request = httpcore.Request(
            method.encode("ascii"),
            httpcore.URL(scheme=scheme, host=host, port=port, target=target),
            headers=sent,
            extensions={"timeout": self.timeout},
        )
        response = await self.pool.handle_async_request(request)
        try:
            yield Response(response)
        finally:
            await response.stream.aclose()

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def __aenter__(self) -> FeedClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


# Request URLs made only of what httpx's parser keeps as it is: an ASCII host name or dotted-quad
# IPv4 address, an optional port, a path and a query of unreserved and sub-delimiter characters
# and well-formed percent-escapes, no dot segments. Most feed URLs are like this; ``_target``
# splits them here, the same as httpx does (tests/test_fetch.py checks the two against each
# other), and httpx parses the rest. Its parser was 14% of the fetching's CPU in a round where
# every feed answered 304.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_PLAIN_URL = re.compile(
    r"(https?)://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::([0-9]{1,5}))?"
    rf"((?:/{_PCHAR}*)*)(\?(?:{_PCHAR}|[/?])*)?(?:#[!-~]*)?",
    re.ASCII,
)
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)  # httpx checks these
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def _target(url: str) -> tuple[bytes, bytes, int | None, bytes, bytes]:
    """``url`` as a request sends it: scheme, host, port (None for the scheme's default), the
    path with its query, and the Host header's value. httpx.InvalidURL when it is not a URL."""
    m = _PLAIN_URL.fullmatch(url) if len(url) <= 4096 else None
    if m is not None:
        scheme, host, port, path, query = m.groups()
        host = host.lower()
        number = int(port) if port is not None else None
        if (
            not ("/." in path and any(seg in (".", "..") for seg in path.split("/")))
            and not (_IPV4_STYLE.fullmatch(host) and not _IPV4.fullmatch(host))
            and (number is None or number <= 65535)
        ):
            if number == int(DEFAULT_PORTS[scheme]):
                number = None
            netloc = host if number is None else f"{host}:{number}"
            target = (path or "/") + (query or "")
            return scheme.encode(), host.encode(), number, target.encode(), netloc.encode()
    u = _httpx().URL(url)
    return u.raw_scheme, u.raw_host, u.port, u.raw_path, u.netloc


def _header_bytes(value: str) -> bytes:
    """A header's value as sent: latin-1, as ``Response`` reads them, so that a validator a
    server sent comes back byte for byte; UTF-8 for what latin-1 cannot hold."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class Response:
    """What ``FeedClient.stream`` yields: a response's status, its headers (``headers.get``
    with a lower-case name; a repeated header's values joined by ", ", as httpx does) and
    its body, read with ``aiter_raw`` (still content-encoded)."""

    __slots__ = ("_response", "headers", "raw_headers", "status_code")

    def __init__(self, response: httpcore.Response):
        self._response = response
        self.status_code = response.status
        self.raw_headers = response.headers
        headers: dict[str, str] = {}
        for name, value in response.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers

    @property
    def reason_phrase(self) -> str:
        return self._response.extensions.get("reason_phrase", b"").decode("latin-1")

    def aiter_raw(self):
        return aiter(self._response.stream)

    def with_request(self, url: str) -> httpx.Response:
        """As httpx's response to a GET of ``url`` (for httpx.Cookies.extract_cookies)."""
        httpx = _httpx()
        return httpx.Response(
            self.status_code, headers=self.raw_headers, request=httpx.Request("GET", url)
        )


def ssl_context() -> ssl.SSLContext:
    """The TLS settings of a round's https connections: Python's defaults (certificates and
    host names checked) with certifi's CA bundle, what httpx's own default context is; made
    when a round opens its first https connection (loading the bundle takes ~30 ms)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def make_client(settings: FetchSettings) -> FeedClient:
    return FeedClient(settings)


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After as seconds or an HTTP date -> an absolute UTC time, capped at 7 days."""
    if not value:
        return None
    value = value.strip()
    when: datetime | None
    if value.isdigit():
        when = now + timedelta(seconds=int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return max(now, min(when, now + MAX_RETRY_AFTER))


def parse_max_age(headers, now: datetime) -> int | None:
    """Seconds the response may be reused: Cache-Control max-age (or s-maxage), else Expires."""
    cc = headers.get("cache-control", "")
    for part in cc.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() in ("max-age", "s-maxage") and value.strip().strip('"').isdigit():
            return int(value.strip().strip('"'))
    expires = headers.get("expires")
    if expires:
        try:
            when = parsedate_to_datetime(expires)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, int((when - now).total_seconds()))
    return None


class _TooLarge(Exception):
    pass


class _Undecodable(Exception):
    """A body whose Content-Encoding cannot be undone."""


class _Decoder:
    """Content-Encoding decoder that never produces more than ``limit`` bytes in total."""

    def __init__(self, encoding: str, limit: int):
        self.limit = limit
        self.size = 0
        enc = encoding.lower().strip()
        if enc in ("", "identity"):
            self._z = None
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj()
            self._deflate_raw_fallback = True
        else:
            raise _Undecodable(f"unsupported Content-Encoding {encoding!r}")

    def _account(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self.limit:
            raise _TooLarge
        return data

    def feed(self, chunk: bytes) -> bytes:
        if self._z is None:
            return self._account(chunk)
        out = []
        data = chunk
        while data:
            room = self.limit - self.size + 1
            try:
                piece = self._z.decompress(data, room)
            except zlib.error:
                if getattr(self, "_deflate_raw_fallback", False) and self.size == 0:
                    # Some servers send raw deflate without the zlib header.
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._deflate_raw_fallback = False
                    continue
                raise _Undecodable("corrupt compressed body") from None
            out.append(self._account(piece))
            data = self._z.unconsumed_tail
            if self._z.eof:
                break
        return b"".join(out)


async def fetch_feed(
    client: FeedClient, req: FetchRequest, settings: FetchSettings, now: datetime
) -> FetchResult:
    started = time.monotonic()

    def result(outcome: Outcome, **kw) -> FetchResult:
        kw.setdefault("url", req.url)
        return FetchResult(
            feed_id=req.feed_id, outcome=outcome, elapsed=time.monotonic() - started, **kw
        )

    try:
        async with asyncio.timeout(settings.total_timeout):
            return await _exchange(client, req, settings, now, result)
    except TimeoutError:
        return result(
            Outcome.TIMEOUT, error=f"no complete answer within {settings.total_timeout:g}s"
        )
    except timeouts() as e:
        return result(Outcome.TIMEOUT, error=f"timed out ({type(e).__name__})")
    except _TooLarge:
        return result(
            Outcome.TOO_LARGE, error=f"body larger than the cap of {settings.max_body_bytes} bytes"
        )
    except _Undecodable as e:
        return result(Outcome.NETWORK_ERROR, error=f"bad body encoding: {e}")
    except (*network_errors(), OSError, ValueError) as e:
        return result(
            Outcome.NETWORK_ERROR, error=f"{type(e).__name__}: {e}"[:500] or "network error"
        )


async def refuse_private(url: str) -> str | None:
    """Why ``url``'s host may not be fetched when private addresses are off, or None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as e:
        return f"cannot resolve {host}: {e.strerror or e}"
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_global or addr.is_multicast:
            return (
                f"refused: {host} resolves to the non-public address {addr} "
                "(fetch.allow_private_addresses is off)"
            )
    return None


def _cookie_header(cookies: httpx.Cookies, url: str) -> str | None:
    """The Cookie header ``cookies`` give a request to ``url`` (domain, path, expiry rules)."""
    probe = _httpx().Request("GET", url)
    cookies.set_cookie_header(probe)
    return probe.headers.get("cookie")


DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


async def _drain(resp: Response) -> None:
    """Read the body of a response we do not use (a 304's empty one, a redirect's or an error
    page), at most DRAIN_BYTES for at most DRAIN_SECONDS, so that its connection can serve the
    next feed. A response closed before its end takes its connection with it: every feed of a
    host would connect anew. A body that is too long, too slow or broken is left unread: the
    connection is closed, and the response is still what the status says."""
    seen = 0
    try:
        if resp.status_code in BODILESS:
            # no body by definition: h11 ends the message without reading, so there is
            # nothing to wait for (and no timer to arm, for every 304 of a round)
            async for _ in resp.aiter_raw():
                pass
            return
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in resp.aiter_raw():
                seen += len(chunk)
                if seen > DRAIN_BYTES:
                    return
    except (TimeoutError, *timeouts(), *network_errors()):
        return


async def _exchange(client, req: FetchRequest, settings: FetchSettings, now, result) -> FetchResult:
    url = req.url
    permanent = True
    hops = 0
    cap = settings.max_body_bytes
    cookies = None  # what the redirects so far set, sent on to the next hop
    while True:
        if not settings.allow_private_addresses:
            refusal = await refuse_private(url)
            if refusal:
                return result(Outcome.NETWORK_ERROR, url=url, error=refusal)
        headers = {}
        if req.etag:
            headers["If-None-Match"] = req.etag
        if req.last_modified:
            headers["If-Modified-Since"] = req.last_modified
        if cookies:
            cookie = _cookie_header(cookies, url)
            if cookie:
                headers["Cookie"] = cookie
        async with client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if not 200 <= status < 300:
                await _drain(resp)
            if status in REDIRECTS:
                if "set-cookie" in resp.headers:
                    cookies = cookies or _httpx().Cookies()
                    cookies.extract_cookies(resp.with_request(url))
                location = resp.headers.get("location")
                if not location:
                    return result(
                        Outcome.HTTP_ERROR,
                        url=url,
                        status_code=status,
                        error=f"HTTP {status} redirect without a Location header",
                    )
                target = urljoin(url, location.strip())
                if urlsplit(target).scheme not in ("http", "https"):
                    return result(
                        Outcome.NETWORK_ERROR,
                        url=url,
                        status_code=status,
                        error=f"redirect to a non-HTTP URL refused: {target[:200]}",
                    )
                hops += 1
                if hops > settings.max_redirects:
                    return result(
                        Outcome.NETWORK_ERROR,
                        url=url,
                        status_code=status,
                        error=f"more than {settings.max_redirects} redirects",
                    )
                permanent = permanent and status in PERMANENT
                url = target
                continue
            moved = url if (hops and permanent) else None
            common = dict(url=url, permanent_url=moved, status_code=status)
            if status == 304:
                common["max_age_seconds"] = parse_max_age(resp.headers, now)
                return result(
                    Outcome.NOT_MODIFIED,
                    etag=req.etag,
                    last_modified=req.last_modified,
                    body_hash=req.body_hash,
                    **common,
                )
            if status == 410:
                return result(Outcome.GONE, error="HTTP 410 Gone: the feed was removed", **common)
            if not 200 <= status < 300:
                retry = parse_retry_after(resp.headers.get("retry-after"), now)
                reason = resp.reason_phrase or ""
                return result(
                    Outcome.HTTP_ERROR,
                    retry_after=retry,
                    error=f"HTTP {status} {reason}".strip(),
                    **common,
                )
            declared = resp.headers.get("content-length", "")
            if (
                declared.isdigit()
                and not resp.headers.get("content-encoding")
                and int(declared) > cap
            ):
                raise _TooLarge
            decoder = _Decoder(resp.headers.get("content-encoding", ""), cap)
            digest = hashlib.blake2b(digest_size=16)
            parts = []
            async for chunk in resp.aiter_raw():
                data = decoder.feed(chunk)
                if data:
                    digest.update(data)
                    parts.append(data)
            body = b"".join(parts)
            body_hash = digest.hexdigest()
            etag = resp.headers.get("etag")
            last_modified = resp.headers.get("last-modified")
            ctype = resp.headers.get("content-type")
            common["max_age_seconds"] = parse_max_age(resp.headers, now)
            if req.body_hash and body_hash == req.body_hash:
                return result(
                    Outcome.NOT_MODIFIED,
                    etag=etag,
                    last_modified=last_modified,
                    body_hash=body_hash,
                    content_type=ctype,
                    **common,
                )
            return result(
                Outcome.OK,
                body=body,
                body_hash=body_hash,
                etag=etag,
                last_modified=last_modified,
                content_type=ctype,
                **common,
            )
