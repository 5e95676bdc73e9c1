"""A small container registry served on 127.0.0.1 from the test's own event loop.

It holds manifests (by tag and by digest, with their media types) and blobs, and answers the
pull API as Distribution does: GET and HEAD with Docker-Content-Digest, Content-Type and
Content-Length, single ``bytes=`` ranges with 206, tag lists with ``n``/``last`` and a ``Link``
header. Optionally it wants Basic credentials, or Bearer tokens from a ``/token`` endpoint of
its own. It records every request, misbehaves as ``faults`` say (tests.support.fakefaults),
and can be stopped (connection refused) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from multidict import CIMultiDictProxy

from .fakefaults import (
    WRONG_DIGEST,
    Fault,
    byte_range,
    fault_answer,
    oci_error,
    send_body,
    take_fault,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_V2 = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FakeImage:
    repository: str
    tag: str
    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(digest_of(layer) for layer in self.layers)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]


@dataclass
class TokenAuth:
    """Bearer tokens from the registry's own ``/token``, as Docker Hub hands them out."""

    users: dict[str, str] = field(default_factory=dict)
    anonymous: bool = True  # tokens for callers without credentials
    expires_in: int = 300
    body: bytes | None = None  # answer this instead of a token: a broken token server
    realm: str | None = None  # challenge with this realm instead of the registry's /token
    # user -> the repositories its tokens may pull; None: any. A token asked for another one
    # is granted without it, as Distribution's token servers do, and refused where used.
    grants: dict[str, tuple[str, ...]] | None = None
    base_open: bool = True  # False: /v2/ itself wants a token, as Docker Hub's does


class FakeRegistry:
    def __init__(
        self, *, basic: tuple[str, str] | None = None, token: TokenAuth | None = None
    ) -> None:
        self.basic = basic
        self.token = token
        self.blobs: dict[str, bytes] = {}
        # Which repositories hold a blob or a manifest, as Distribution's links say; a blob
        # added without a repository is in every one.
        self.blob_repos: dict[str, set[str]] = {}
        self.shared_blobs: set[str] = set()
        self.manifest_repos: dict[str, set[str]] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest -> (media type, body)
        self.tags: dict[str, dict[str, str]] = {}  # repository -> tag -> digest
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.token_scopes: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._granted: dict[str, str] = {}  # token -> repository
        self._serial = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- content ---------------------------------------------------------------------------

    def add_blob(self, data: bytes, repository: str | None = None) -> str:
        """A blob in ``repository`` only, or in every repository when it is None."""
        digest = digest_of(data)
        self.blobs[digest] = data
        if repository is None:
            self.shared_blobs.add(digest)
        else:
            self.blob_repos.setdefault(digest, set()).add(repository)
        return digest

    def holds_blob(self, repository: str, digest: str) -> bool:
        return digest in self.shared_blobs or repository in self.blob_repos.get(digest, ())

    def add_manifest(self, repository: str, body: bytes, media_type: str, tag: str = "") -> str:
        digest = digest_of(body)
        self.manifests[digest] = (media_type, body)
        self.manifest_repos.setdefault(digest, set()).add(repository)
        self.tags.setdefault(repository, {})
        if tag:
            self.tags[repository][tag] = digest
        return digest

    def push_image(
        self, repository: str, tag: str, layer_sizes: Iterable[int] = (4096,), seed: int = 0
    ) -> FakeImage:
        """An OCI image of seeded random layers; a new seed makes a new image."""
        rng = random.Random(f"{repository}:{tag}:{seed}")
        layers = tuple(rng.randbytes(size) for size in layer_sizes)
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, layer) for layer in layers],
        }
        body = json.dumps(manifest, indent=2).encode()
        for blob in (config, *layers):
            self.add_blob(blob, repository)
        self.add_manifest(repository, body, OCI_MANIFEST, tag)
        return FakeImage(repository, tag, body, OCI_MANIFEST, config, layers)

    def push_index(
        self, repository: str, tag: str, platforms: Iterable[str]
    ) -> tuple[str, dict[str, FakeImage]]:
        """A multi-platform image: an OCI index of one small image per ``os/arch``; its
        digest, and the images by platform."""
        images = {
            platform: self.push_image(repository, f"{tag}-{platform.replace('/', '-')}", seed=n)
            for n, platform in enumerate(platforms)
        }
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **_descriptor(OCI_MANIFEST, image.manifest),
                    "platform": dict(zip(("os", "architecture"), platform.split("/"), strict=True)),
                }
                for platform, image in images.items()
            ],
        }
        return self.add_manifest(repository, json.dumps(index).encode(), OCI_INDEX, tag), images

    # -- what it was asked -----------------------------------------------------------------

    def count(self, method: str, path: str) -> int:
        """Requests with this method whose path matches the regex ``path`` whole."""
        return sum(1 for s in self.seen if s.method == method and re.fullmatch(path, s.path))

    def revoke_tokens(self) -> None:
        """Every token handed out so far stops working, as after a key rotation."""
        self._granted.clear()

    def ranges(self) -> list[str]:
        return [s.headers["Range"] for s in self.seen if "Range" in s.headers]

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve, on the port of the last run if there was one."""
        runner = web.AppRunner(
            self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Close the port and every open connection: clients now get connection refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeRegistry:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_get("/_storage/{digest}", self._storage)
        app.router.add_route("*", "/{tail:.*}", self._v2)
        return app

    # -- the API ---------------------------------------------------------------------------

    def _arrived(self, request: web.Request) -> tuple[Fault | None, web.Response | None]:
        """Record the request; its fault, and the answer that fault gives instead, if any."""
        self.seen.append(
            Seen(request.method, request.path, request.rel_url.raw_query_string, request.headers)
        )
        fault = take_fault(self.faults, request.method, request.path)
        return fault, fault_answer(fault) if fault and fault.status is not None else None

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        fault, spoilt = self._arrived(request)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if spoilt is not None:
            return spoilt
        match = _V2.fullmatch(request.path)
        repository = match["name"] if match else ""
        if (refusal := self._refusal(request, repository)) is not None:
            return refusal
        if request.path in ("/v2", "/v2/"):
            return web.json_response({})
        if match is None or request.method not in ("GET", "HEAD"):
            return oci_error(404, "UNSUPPORTED")
        if match["kind"] == "blobs":
            return await self._blob(request, repository, match["ref"], fault)
        if match["kind"] == "manifests":
            return await self._manifest(request, repository, match["ref"], fault)
        return self._tag_list(request, repository)

    async def _manifest(
        self, request: web.Request, repository: str, ref: str, fault: Fault | None
    ) -> web.StreamResponse:
        digest = ref if ref.startswith("sha256:") else self.tags.get(repository, {}).get(ref)
        if digest is None or repository not in self.manifest_repos.get(digest, ()):
            return oci_error(404, "MANIFEST_UNKNOWN")
        media_type, body = self.manifests[digest]
        claimed = WRONG_DIGEST if fault is not None and fault.wrong_digest else digest
        headers = {"Docker-Content-Digest": claimed, "Content-Type": media_type}
        return await send_body(request, 200, headers, body, fault)

    async def _blob(
        self, request: web.Request, repository: str, digest: str, fault: Fault | None
    ) -> web.StreamResponse:
        body = self.blobs.get(digest)
        if body is None or not self.holds_blob(repository, digest):
            return oci_error(404, "BLOB_UNKNOWN")
        if fault is not None and fault.location and request.method == "GET":
            location = fault.location.format(port=self.port, digest=digest)
            return web.Response(status=307, headers={"Location": location})
        if fault is not None and fault.redirect and request.method == "GET":
            location = f"http://localhost:{self.port}/_storage/{digest}?sig=a%2Fb%3D%3D"
            return web.Response(status=307, headers={"Location": location})
        claimed = WRONG_DIGEST if fault is not None and fault.wrong_digest else digest
        headers = {
            "Docker-Content-Digest": claimed,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        wanted = (
            None if fault is not None and fault.ignore_range else byte_range(request, len(body))
        )
        if isinstance(wanted, web.Response):
            return wanted
        if wanted is None:
            return await send_body(request, 200, headers, body, fault)
        start, end = wanted
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        return await send_body(request, 206, headers, body[start:end], fault)

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        """Where redirected blobs are fetched from: no credentials wanted, nor welcome."""
        self._arrived(request)
        body = self.blobs.get(request.match_info["digest"])
        if body is None or "Authorization" in request.headers:
            return web.Response(status=403 if body else 404)
        return web.Response(body=body, content_type="application/octet-stream")

    def _tag_list(self, request: web.Request, repository: str) -> web.Response:
        if repository not in self.tags:
            return oci_error(404, "NAME_UNKNOWN")
        tags = sorted(self.tags[repository])
        if last := request.query.get("last"):
            tags = [tag for tag in tags if tag > last]
        headers = {}
        if (n := request.query.get("n")) and len(tags) > int(n):
            tags = tags[: int(n)]
            link = f"/v2/{repository}/tags/list?last={tags[-1]}&n={n}"
            headers["Link"] = f'<{link}>; rel="next"'
        return web.json_response({"name": repository, "tags": tags}, headers=headers)

    # -- auth ------------------------------------------------------------------------------

    def _refusal(self, request: web.Request, repository: str) -> web.Response | None:
        """The 401 to answer, or None when the request may go on."""
        sent = request.headers.get("Authorization", "")
        if self.basic is not None and sent != _basic(*self.basic):
            return oci_error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="fake"'})
        # The base endpoint takes any token, and none, unless base_open is off.
        if self.token is not None and (repository or not self.token.base_open):
            granted = self._granted.get(sent.removeprefix("Bearer "))
            if granted == repository or (granted is not None and not repository):
                return None
            realm = self.token.realm or f"{self.url}/token"
            challenge = f'Bearer realm="{realm}",service="fake"'
            if repository:
                challenge += f',scope="repository:{repository}:pull"'
            return oci_error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
        return None

    async def _token(self, request: web.Request) -> web.Response:
        _, spoilt = self._arrived(request)
        if spoilt is not None:
            return spoilt
        auth = self.token
        assert auth is not None, "no token auth configured"
        if auth.body is not None:
            return web.Response(body=auth.body, content_type="application/json")
        sent = request.headers.get("Authorization")
        known = {_basic(user, password) for user, password in auth.users.items()}
        if (sent is None and not auth.anonymous) or (sent is not None and sent not in known):
            return oci_error(401, "UNAUTHORIZED")
        scope = request.query.get("scope", "")
        self.token_scopes.append(scope)
        token = f"token-{next(self._serial)}"
        repository = scope.removeprefix("repository:").rsplit(":", 1)[0]
        user = next((u for u, p in auth.users.items() if _basic(u, p) == sent), None)
        if auth.grants is not None and repository not in auth.grants.get(user or "", ()):
            repository = ""
        self._granted[token] = repository
        return web.json_response({"token": token, "expires_in": auth.expires_in})


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
