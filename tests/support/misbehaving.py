"""A small in-process registry that misbehaves on request, and a harness that points the typed
registry client (``proxy.upstream.client``) at it: for tests/unit/test_registry_client_*.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy.config import UpstreamConfig
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.upstream.client import UpstreamClient

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE}).encode()
MANIFEST_DIGEST = Digest.of(MANIFEST)
BLOB = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB: several chunks
BLOB_DIGEST = Digest.of(BLOB)
USER, PASSWORD = "puller", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "Bearer the-token"


@dataclass
class MisbehavingRegistry:
    """What the registry serves and how it misbehaves; tests change it between requests."""

    auth: str | None = None  # "basic" or "bearer"
    forced: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # path regex
    digest_header: str | None = str(MANIFEST_DIGEST)
    manifest: bytes = MANIFEST
    chunked: bool = False  # send manifests without a Content-Length
    drops: list[int] = field(default_factory=list)  # per blob GET: bytes sent before closing
    stalls: list[int] = field(default_factory=list)  # per blob GET: bytes sent before going silent
    ignore_range: bool = False
    content_range_offset: int = 0  # added to the start a 206 claims
    redirect_to: str | None = None  # blob GETs go to this origin's /storage/
    seen: list[tuple[str, str, CIMultiDict[str]]] = field(default_factory=list)
    storage_seen: list[CIMultiDict[str]] = field(default_factory=list)
    token_queries: list[dict[str, str]] = field(default_factory=list)
    # Set at teardown: a stalled answer waits for it, longer than any read timeout here.
    unstall: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/token", self._token)
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/v2/{name:.+}/tags/list", self._tags)
        app.router.add_get("/storage/{digest}", self._storage)
        return app

    def ranges(self) -> list[str]:
        return [headers["Range"] for _, _, headers in self.seen if "Range" in headers]

    def authorizations(self) -> list[str | None]:
        return [headers.get("Authorization") for _, _, headers in self.seen]

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(("/token", "/storage")):
            return await handler(request)
        self.seen.append((request.method, request.path_qs, CIMultiDict(request.headers)))
        for regex, (status, headers) in self.forced.items():
            if re.fullmatch(regex, request.path):
                body = {"errors": [{"code": "SOMETHING", "message": "forced", "detail": 1}]}
                return web.json_response(body, status=status, headers=headers)
        sent = request.headers.get("Authorization")
        if self.auth == "basic" and sent != BASIC:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.auth == "bearer" and sent != TOKEN:
            realm = f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_queries.append(dict(request.query))
        return web.json_response({"token": TOKEN.removeprefix("Bearer "), "expires_in": 300})

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        reference = request.match_info["reference"]
        if reference not in ("latest", str(MANIFEST_DIGEST)):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {"Content-Type": MANIFEST_TYPE + "; charset=utf-8"}
        if self.digest_header is not None:
            headers["Docker-Content-Digest"] = self.digest_header
        if not self.chunked:
            return web.Response(body=self.manifest, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(self.manifest)
        await response.write_eof()
        return response

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["digest"] != str(BLOB_DIGEST):
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if self.redirect_to is not None and request.method == "GET":
            location = f"{self.redirect_to}/storage/{BLOB_DIGEST}"
            return web.Response(status=307, headers={"Location": location})
        start = 0
        if "Range" in request.headers and not self.ignore_range:
            start = int(request.headers["Range"].removeprefix("bytes=").removesuffix("-"))
        response = web.StreamResponse(
            status=206 if start else 200,
            headers={"Docker-Content-Digest": str(BLOB_DIGEST)},
        )
        if start:
            claimed = start + self.content_range_offset
            response.headers["Content-Range"] = f"bytes {claimed}-{len(BLOB) - 1}/{len(BLOB)}"
        response.content_length = len(BLOB) - start
        await response.prepare(request)
        if request.method == "GET":
            await self._send(request, response, BLOB[start:])
        return response

    async def _send(self, request: web.Request, response: web.StreamResponse, body: bytes) -> None:
        if self.drops:
            await response.write(body[: self.drops.pop(0)])
            assert request.transport is not None
            request.transport.close()
            return
        if self.stalls:
            after = self.stalls.pop(0)
            await response.write(body[:after])
            await self.unstall.wait()
        await response.write(body)
        await response.write_eof()

    async def _tags(self, request: web.Request) -> web.Response:
        headers = {"Link": '</v2/x/tags/list?last=b&n=2>; rel="next"'}
        return web.json_response({"name": "x", "tags": ["a", "b"]}, headers=headers)

    async def _storage(self, request: web.Request) -> web.Response:
        self.storage_seen.append(CIMultiDict(request.headers))
        return web.Response(body=BLOB, content_type="application/octet-stream")


@dataclass
class Harness:
    fake: MisbehavingRegistry
    server: TestServer
    session: aiohttp.ClientSession
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def client(self, **config: Any) -> UpstreamClient:
        settings: dict[str, Any] = {"name": self.name, "url": self.url, **config}
        offline = settings.pop("offline", False)
        return UpstreamClient(
            UpstreamConfig(**settings), self.session, self.metrics, offline=offline
        )

    @property
    def name(self) -> str:
        """The upstream's name: its own host, so it is told no namespace."""
        return self.url.removeprefix("http://")

    def metric(self, name: str, **labels: str) -> float:
        """A sample of metric ``name`` for this upstream, unless ``labels`` name another."""
        labels = {"upstream": self.name, **labels}
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def read_blob(
    client: UpstreamClient, offset: int = 0, digest: Digest = BLOB_DIGEST
) -> tuple[int | None, bytes]:
    async with client.open_blob("x", digest, offset) as blob:
        return blob.descriptor.size, b"".join([chunk async for chunk in blob])
