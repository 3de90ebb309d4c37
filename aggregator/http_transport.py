"""httpx's client API over the project's connection pool (``http_pool.ConnectionPool``), for code
that wants httpx's client (the tests do). A round does not go through it: its ``fetch.FeedClient``
sends httpcore's requests to the pool itself, and its process does not import httpx at all
unless a feed needs it (see fetch.py)."""

from __future__ import annotations

import httpx

from .http_pool import ConnectionPool


class Transport(httpx.AsyncHTTPTransport):
    """httpx's transport (request conversion, exception mapping) over ``ConnectionPool``."""

    def __init__(self, *, limits: httpx.Limits, verify=True, network_backend=None):
        # (httpx's own pool, replaced below, gets a context that loads no CA bundle)
        super().__init__(verify=False, trust_env=False, limits=limits)
        self._pool = ConnectionPool(
            ssl_context=lambda: httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections or 100,
            max_idle=(
                limits.max_connections
                if limits.max_keepalive_connections is None
                else limits.max_keepalive_connections
            )
            or 0,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network_backend,
        )

    @property
    def pool(self) -> ConnectionPool:
        return self._pool
