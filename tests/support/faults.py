"""A fault-injecting HTTP server in front of a real registry.

It forwards every request to the registry and, where a test asks, lies about a blob's
bytes, cuts a blob short, stalls, answers a chosen status, demands credentials, or
redirects blobs to a "storage" host on another port, recording what it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bench.relay import relayed

from .threadedapp import ThreadedApp

_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: CIMultiDict[str]


@dataclass
class Faults:
    """What to do wrong. Tests mutate this while the server runs."""

    corrupt_blobs: set[str] = field(default_factory=set)  # flip a byte, keep the length
    # digest -> (bytes sent before the connection is closed, how many responses to cut)
    truncate_blobs: dict[str, tuple[int, int]] = field(default_factory=dict)
    # digest -> (bytes sent before going silent, seconds of silence, how many responses)
    stall_blobs: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    status: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # regex -> answer
    basic_auth: tuple[str, str] | None = None
    redirect_blobs: bool = False
    wrong_manifest_digest: bool = False
    response_headers: dict[str, str] = field(default_factory=dict)  # added to every answer


class FaultyUpstream:
    def __init__(self, registry_url: str) -> None:
        self.registry_url = registry_url
        self.faults = Faults()
        self.seen: list[Seen] = []
        self.storage_seen: list[Seen] = []
        self._lock = threading.Lock()
        self._front_server = ThreadedApp(self._front_app())
        self._storage = ThreadedApp(self._storage_app())

    @property
    def url(self) -> str:
        return self._front_server.url

    def start(self) -> None:
        self._storage.start()
        self._front_server.start()

    def stop(self) -> None:
        self._front_server.stop()
        self._storage.stop()

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and pattern.fullmatch(s.path))

    # -- the registry's face ---------------------------------------------------------------

    def _front_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._front)
        return app

    async def _front(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.seen.append(Seen(request.method, request.path, CIMultiDict(request.headers)))
        faults = self.faults
        for regex, (status, headers) in list(faults.status.items()):
            if re.fullmatch(regex, request.path):
                return web.json_response(
                    {
                        "errors": [
                            {
                                "code": "TOOMANYREQUESTS" if status == 429 else "UNKNOWN",
                                "message": "injected",
                            }
                        ]
                    },
                    status=status,
                    headers=headers,
                )
        if faults.basic_auth is not None and not _authorized(request, faults.basic_auth):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="faulty"'})
        blob = _BLOB.fullmatch(request.path)
        if blob and faults.redirect_blobs and request.method == "GET":
            location = f"{self._storage.url}/storage{request.path}?sig=a%2Fb%3D%3D"
            # Not HTTPTemporaryRedirect: it re-quotes the URL, and the test checks exact bytes.
            return web.Response(status=307, headers={"Location": location})
        return await self._forward(request, blob["digest"] if blob else None)

    async def _forward(self, request: web.Request, digest: str | None) -> web.StreamResponse:
        # Only what negotiation and resumption need; the registry behind is open.
        accept = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() in ("accept", "range")
        )
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(
                request.method,
                self.registry_url + request.path_qs,
                headers=accept,
                allow_redirects=False,
            ) as upstream:
                response = relayed(upstream)
                response.headers.update(self.faults.response_headers)
                if self.faults.wrong_manifest_digest and "/manifests/" in request.path:
                    response.headers["Docker-Content-Digest"] = "sha256:" + "0" * 64
                await response.prepare(request)
                if request.method == "HEAD":
                    return response
                await self._copy_body(upstream, response, request, digest)
                return response

    async def _copy_body(
        self,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        request: web.Request,
        digest: str | None,
    ) -> None:
        faults = self.faults
        body = await upstream.read()
        if digest in faults.corrupt_blobs and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if digest is not None and faults.truncate_blobs.get(digest, (0, 0))[1] > 0:
            after, times = faults.truncate_blobs[digest]
            faults.truncate_blobs[digest] = (after, times - 1)
            await response.write(body[:after])
            assert request.transport is not None
            request.transport.close()
            return
        if digest is not None and faults.stall_blobs.get(digest, (0, 0.0, 0))[2] > 0:
            after, seconds, times = faults.stall_blobs[digest]
            faults.stall_blobs[digest] = (after, seconds, times - 1)
            await response.write(body[:after])
            await asyncio.sleep(seconds)
            body = body[after:]
        await response.write(body)
        await response.write_eof()

    # -- a blob storage host on another origin ---------------------------------------------

    def _storage_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/storage/{tail:.*}", self._storage_get)
        return app

    async def _storage_get(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.storage_seen.append(
                Seen(request.method, request.raw_path, CIMultiDict(request.headers))
            )
        path = request.path[len("/storage") :]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(self.registry_url + path) as upstream:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body, content_type="application/octet-stream"
                )


def _authorized(request: web.Request, creds: tuple[str, str]) -> bool:
    expected = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    return request.headers.get("Authorization") == expected
