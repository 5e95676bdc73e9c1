"""A forwarding HTTP server in front of a real registry that sends blob bodies no faster than
``rate`` bytes a second, so that a test can SIGKILL a replica while it is mid-blob.

It records when each blob response started and when its first body byte went out, which is
how a test tells when bytes flowed again after the kill (a takeover's Range GET).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from bench.relay import relayed

from .threadedapp import ThreadedApp

_BLOB = re.compile(r"/v2/.+/blobs/(?P<digest>sha256:[0-9a-f]{64})")
_FORWARDED = ("accept", "range", "authorization")
CHUNK = 64 * 1024


@dataclass
class BlobSend:
    """One blob response as this server sent it (times are ``time.monotonic()``)."""

    method: str
    digest: str
    range: str | None
    status: int
    started: float
    first_byte: float | None = None
    sent: int = 0
    finished: bool = False


class ThrottledUpstream:
    """``rate``: bytes a second for each blob body, None for unlimited; tests may change it
    while the server runs."""

    def __init__(self, registry_url: str, rate: float | None = None) -> None:
        self.registry_url = registry_url
        self.rate = rate
        self.sends: list[BlobSend] = []
        self._lock = threading.Lock()
        self._server = ThreadedApp(self._app())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def blob_sends(self, digest: str) -> list[BlobSend]:
        with self._lock:
            return [s for s in self.sends if s.digest == digest]

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        blob = _BLOB.fullmatch(request.path)
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(
                request.method,
                self.registry_url + request.path_qs,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                response = relayed(upstream)
                await response.prepare(request)
                if request.method == "HEAD":
                    return response
                send = None
                if blob is not None:
                    send = BlobSend(
                        request.method,
                        blob["digest"],
                        request.headers.get("Range"),
                        upstream.status,
                        time.monotonic(),
                    )
                    with self._lock:
                        self.sends.append(send)
                await self._copy(upstream, response, send)
                return response

    async def _copy(
        self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, send: BlobSend | None
    ) -> None:
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                if send is not None:
                    await self._pace(send, len(chunk))
                await response.write(chunk)
                if send is not None:
                    send.first_byte = send.first_byte or time.monotonic()
                    send.sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientError):
            return  # the replica went away (killed) mid-body: what it got is recorded
        if send is not None:
            send.finished = True

    async def _pace(self, send: BlobSend, size: int) -> None:
        rate = self.rate
        if rate:
            due = send.started + (send.sent + size) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
