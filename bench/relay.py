"""The answer a forwarding proxy of the bench or the tests gives: the upstream's status and
end-to-end headers, on a response still to be prepared (a fault proxy may add its own)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

# Hop-by-hop, or set by aiohttp itself for the response it sends.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


def relayed(upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status)
    for key, value in upstream.headers.items():
        if key.lower() not in HOP_BY_HOP:
            response.headers[key] = value
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    return response
