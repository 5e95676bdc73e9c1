"""The typed registry client against a small in-process registry that misbehaves on request."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy import errors
from proxy.config import UpstreamConfig
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.upstream import blobstream
from proxy.upstream.client import UpstreamClient
from tests.support.ports import free_port

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE}).encode()
MANIFEST_DIGEST = Digest.of(MANIFEST)
BLOB = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB: several chunks
BLOB_DIGEST = Digest.of(BLOB)
USER, PASSWORD = "puller", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "Bearer the-token"


@dataclass
class FakeRegistry:
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
    fake: FakeRegistry
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


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(blobstream, "RESUME_BACKOFF", (0.0, 0.0, 0.0))
    fake = FakeRegistry()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield Harness(fake, server, session)
    fake.unstall.set()
    await server.close()


async def read_blob(
    client: UpstreamClient, offset: int = 0, digest: Digest = BLOB_DIGEST
) -> tuple[int | None, bytes]:
    async with client.open_blob("x", digest, offset) as blob:
        return blob.descriptor.size, b"".join([chunk async for chunk in blob])


# -- what each method answers -------------------------------------------------------------


async def test_manifest_head_and_get(harness: Harness) -> None:
    client = harness.client()
    head = await client.head_manifest("x", "latest", (MANIFEST_TYPE,))
    assert head.digest == MANIFEST_DIGEST
    assert head.size == len(MANIFEST)
    assert head.media_type == MANIFEST_TYPE + "; charset=utf-8"
    manifest = await client.get_manifest("x", "latest", (MANIFEST_TYPE,), None)
    assert manifest.digest == MANIFEST_DIGEST
    assert manifest.body == MANIFEST
    assert manifest.media_type == MANIFEST_TYPE
    accepts = [headers.getall("Accept") for _, _, headers in harness.fake.seen]
    assert accepts == [[MANIFEST_TYPE], [MANIFEST_TYPE]]


async def test_manifest_head_without_a_digest_says_so(harness: Harness) -> None:
    harness.fake.digest_header = None
    head = await harness.client().head_manifest("x", "latest", ())
    assert head.digest is None
    assert head.size == len(MANIFEST)


async def test_blob_head_and_tags_and_ping(harness: Harness) -> None:
    client = harness.client()
    await client.ping()
    head = await client.head_blob("x", BLOB_DIGEST)
    assert (head.digest, head.size) == (BLOB_DIGEST, len(BLOB))
    tags = await client.list_tags("x", "2", "a")
    assert json.loads(tags.body)["tags"] == ["a", "b"]
    assert tags.content_type.startswith("application/json")
    assert tags.link == '</v2/x/tags/list?last=b&n=2>; rel="next"'
    assert harness.fake.seen[-1][1] == "/v2/x/tags/list?n=2&last=a"


async def test_blob_head_for_another_digest_is_invalid(harness: Harness) -> None:
    other = Digest.of(b"other")
    harness.fake.forced[f"/v2/x/blobs/{other}"] = (200, {"Docker-Content-Digest": "sha256:1"})
    with pytest.raises(errors.UpstreamInvalid):
        await harness.client().head_blob("x", other)
    assert harness.metric("regcache_digest_mismatch_total", kind="blob") == 1


async def test_namespace_goes_upstream_when_the_url_is_another_host(harness: Harness) -> None:
    await harness.client(name="docker.io").head_manifest("library/x", "latest", ())
    assert harness.fake.seen[-1][1] == "/v2/library/x/manifests/latest?ns=docker.io"


async def test_offline_asks_nothing(harness: Harness) -> None:
    with pytest.raises(errors.UpstreamOffline):
        await harness.client(offline=True).head_blob("x", BLOB_DIGEST)
    assert harness.fake.seen == []


# -- status codes --------------------------------------------------------------------------


async def test_not_found_is_named_after_what_was_asked(harness: Harness) -> None:
    client = harness.client()
    missing = Digest.of(b"missing")
    with pytest.raises(errors.ManifestUnknown):
        await client.head_manifest("x", "nope", ())
    with pytest.raises(errors.ManifestUnknown):
        await client.get_manifest("x", "nope", (), None)
    with pytest.raises(errors.BlobUnknown):
        await client.head_blob("x", missing)
    with pytest.raises(errors.BlobUnknown):
        await read_blob(client, digest=missing)
    harness.fake.forced["/v2/x/tags/list"] = (404, {})
    with pytest.raises(errors.NameUnknown):
        await client.list_tags("x")


@pytest.mark.parametrize(
    ("status", "headers", "error", "code"),
    [
        (401, {}, errors.Unauthorized, "UNAUTHORIZED"),
        (403, {}, errors.Denied, "DENIED"),
        (429, {"Retry-After": "30"}, errors.TooManyRequests, "TOOMANYREQUESTS"),
        (500, {}, errors.UpstreamUnavailable, "UNAVAILABLE"),
        (503, {}, errors.UpstreamUnavailable, "UNAVAILABLE"),
    ],
)
async def test_failing_statuses(
    harness: Harness,
    status: int,
    headers: dict[str, str],
    error: type[errors.RegistryError],
    code: str,
) -> None:
    harness.fake.forced["/v2/x/manifests/latest"] = (status, headers)
    client = harness.client()
    with pytest.raises(error) as raised:
        await client.get_manifest("x", "latest", (), None)
    assert raised.value.error_code == code
    assert raised.value.headers == headers
    assert raised.value.detail["upstream_status"] == status
    failed = harness.metric("regcache_upstream_requests_total", method="GET", status=str(status))
    assert failed == 1


# -- credentials and redirects -------------------------------------------------------------


async def test_bearer_challenge_then_retry_then_token_up_front(harness: Harness) -> None:
    harness.fake.auth = "bearer"
    client = harness.client()
    await client.head_manifest("x", "latest", ())
    await client.head_manifest("x", "latest", ())
    assert harness.fake.authorizations() == [None, TOKEN, TOKEN]
    assert harness.fake.token_queries == [{"scope": "repository:x:pull", "service": "fake"}]


async def test_basic_challenge_then_retry(harness: Harness) -> None:
    harness.fake.auth = "basic"
    await harness.client(username=USER, password=PASSWORD).head_blob("x", BLOB_DIGEST)
    assert harness.fake.authorizations() == [None, BASIC]


async def test_refused_credentials_are_unauthorized(harness: Harness) -> None:
    harness.fake.auth = "basic"
    with pytest.raises(errors.Unauthorized):
        await harness.client(username=USER, password="wrong").head_blob("x", BLOB_DIGEST)
    assert len(harness.fake.seen) == 2


async def test_redirect_to_another_host_carries_no_credentials(harness: Harness) -> None:
    storage = TestServer(harness.fake.app(), host="127.0.0.1")
    await storage.start_server()
    try:
        harness.fake.auth = "basic"
        harness.fake.redirect_to = str(storage.make_url("")).rstrip("/")
        size, body = await read_blob(harness.client(username=USER, password=PASSWORD))
    finally:
        await storage.close()
    assert size == len(BLOB)
    assert body == BLOB
    assert harness.fake.authorizations()[-1] == BASIC
    assert [headers.get("Authorization") for headers in harness.fake.storage_seen] == [None]


# -- verification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sha256:" + "0" * 64, None),  # the body does not hash to what the upstream claims
        ("sha256:" + "0" * 64, MANIFEST_DIGEST),  # the body is right, the claim is not
        (None, Digest.of(b"expected")),  # the body is not what the client asked for
    ],
)
async def test_manifest_that_does_not_match_its_digest(
    harness: Harness, header: str | None, expected: Digest | None
) -> None:
    harness.fake.digest_header = header
    with pytest.raises(errors.UpstreamInvalid) as raised:
        await harness.client().get_manifest("x", "latest", (), expected)
    assert raised.value.detail["actual"] == str(MANIFEST_DIGEST)
    assert raised.value.detail["header"] == header
    assert harness.metric("regcache_digest_mismatch_total", kind="manifest") == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_manifest(harness: Harness, chunked: bool) -> None:
    harness.fake.manifest = b" " * (4 * 1024 * 1024 + 1)
    harness.fake.chunked = chunked
    with pytest.raises(errors.UpstreamInvalid, match="larger than 4 MiB") as raised:
        await harness.client().get_manifest("x", "latest", (), None)
    # A declared length is refused before a byte of the body is read.
    assert raised.value.detail == (None if chunked else {"size": len(harness.fake.manifest)})


# -- the blob stream -----------------------------------------------------------------------


async def test_blob_streams_whole(harness: Harness) -> None:
    assert await read_blob(harness.client()) == (len(BLOB), BLOB)
    assert harness.fake.ranges() == []
    assert harness.metric("regcache_upstream_bytes_total") == len(BLOB)


@pytest.mark.parametrize(
    ("fault", "config"),
    [
        ({"drops": [300_000]}, {}),
        ({"stalls": [300_000]}, {"read_timeout": 0.2}),
        # An upstream that ignores Range sends the blob again from its start: skipped ahead.
        ({"drops": [300_000], "ignore_range": True}, {}),
    ],
    ids=["dropped", "stalled", "range-ignored"],
)
async def test_blob_resumes_from_the_byte_reached(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    config: dict[str, Any],
) -> None:
    for knob, value in fault.items():
        setattr(harness.fake, knob, value)
    assert await read_blob(harness.client(**config)) == (len(BLOB), BLOB)
    (ranged,) = harness.fake.ranges()
    resumed_at = int(ranged.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 300_000
    assert f"resuming from byte {resumed_at}" in caplog.text
    assert harness.metric("regcache_upstream_resumes_total") == 1
    assert harness.metric("regcache_upstream_bytes_total") == len(BLOB)


async def test_resume_with_the_wrong_range_is_invalid(harness: Harness) -> None:
    harness.fake.drops = [300_000]
    harness.fake.content_range_offset = 1
    with pytest.raises(errors.UpstreamInvalid, match="wrong range"):
        await read_blob(harness.client())


async def test_blob_gives_up_after_three_resumes(harness: Harness) -> None:
    harness.fake.drops = [100_000] * 4
    with pytest.raises(errors.UpstreamUnavailable, match="mid-blob") as raised:
        await read_blob(harness.client())
    assert raised.value.detail["size"] == len(BLOB)
    # Bytes still in flight when the connection closed may be lost with it.
    assert 0 < raised.value.detail["received"] <= 400_000
    assert len(harness.fake.ranges()) == 3


async def test_blob_from_an_offset(harness: Harness) -> None:
    assert await read_blob(harness.client(), 1000) == (len(BLOB), BLOB[1000:])
    harness.fake.ignore_range = True
    assert await read_blob(harness.client(), 1000) == (len(BLOB), BLOB[1000:])


async def test_connection_refused_is_unavailable(harness: Harness) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = harness.client(name="refusing", url=url)
    with pytest.raises(errors.UpstreamUnavailable, match="upstream refusing unreachable"):
        await client.head_manifest("x", "latest", ())
    with pytest.raises(errors.UpstreamUnavailable):
        await read_blob(client)
    assert client.health.healthy is False
    assert harness.metric(
        "regcache_upstream_requests_total", upstream="refusing", method="GET", status="error"
    )
