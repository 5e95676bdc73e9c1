"""How long regcache waits for an upstream."""

from __future__ import annotations

import aiohttp

from proxy.config import UpstreamConfig


def timeout_for(upstream: UpstreamConfig) -> aiohttp.ClientTimeout:
    # No total: a 2 GB layer may take long; only silence is a failure.
    return aiohttp.ClientTimeout(
        total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
    )
