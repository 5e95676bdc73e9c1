"""Where ``regcache warm`` gets the bytes: the cache directory itself, through the same
manifest and blob caches the server uses (verification, single flight, usage and reference
records alike), or a running regcache over HTTP, which caches what it is asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from proxy.cache.references import MANIFEST_TYPES
from proxy.commands.warming import Image, Manifest
from proxy.errors import RegistryError, UpstreamInvalid, UpstreamUnavailable
from proxy.oci.contents import Content
from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.mediatypes import MAX_MANIFEST_BYTES, accepted_types
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.server.cacheparts import CacheParts
from proxy.server.handlers import CACHE_HEADER

# Every manifest type, so a tag resolves to what the upstream holds: the whole index of a
# multi-platform image.
ACCEPT = accepted_types(MANIFEST_TYPES)


class CacheSource:
    """The cache directory, filled from the config's upstreams."""

    def __init__(self, parts: CacheParts) -> None:
        self._parts = parts

    def _target(self, image: Image) -> Target:
        return self._parts.router.route(image.repository, image.registry)

    async def manifest(self, image: Image, reference: Reference) -> Manifest:
        answer = await self._parts.manifests.get(self._target(image), reference, ACCEPT, False)
        assert answer.body is not None, "a GET answers with the body"
        return Manifest(answer.digest, answer.body, fetched=answer.result == "miss")

    async def cached_size(self, image: Image, blob: Content) -> int | None:
        # The image's manifest, served for its repository, taught the cache that the
        # repository references the blob: nothing to check with the upstream here.
        return await self._parts.store.size(blob.digest)

    async def fetch_blob(self, image: Image, blob: Content, advance: Callable[[int], None]) -> int:
        async with self._parts.blobs.open(self._target(image), blob.digest) as opened:
            async for piece in opened.pieces(0, opened.size):
                advance(len(piece) if isinstance(piece, bytes) else piece.count)
        # Read to the end means verified and stored, unless the disk filled up meanwhile.
        size = await self._parts.store.size(blob.digest)
        if size is None:
            raise UpstreamUnavailable(f"{blob.digest} was fetched but not stored (disk full?)")
        return size


class ServerSource:
    """A running regcache at ``url``: what it serves, it has cached (or is caching)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self._url = url.rstrip("/")
        self._session = session

    def _path(self, image: Image, kind: str, reference: str) -> str:
        # ?ns= names the upstream as containerd does, so the server's own routing decides.
        name = quote(image.repository, safe="/")
        return f"{self._url}/v2/{name}/{kind}/{reference}?ns={quote(image.registry, safe='')}"

    async def manifest(self, image: Image, reference: Reference) -> Manifest:
        url = self._path(image, "manifests", str(reference))
        headers = {"Accept": ", ".join(ACCEPT)}
        async with self._session.get(url, headers=headers) as response:
            await _check(response)
            body = await response.content.read(MAX_MANIFEST_BYTES + 1)
            digest = reference.digest or _claimed(response.headers.get("Docker-Content-Digest"))
            fetched = response.headers.get(CACHE_HEADER) != "HIT"
        if len(body) > MAX_MANIFEST_BYTES or not digest.matches(body):
            raise UpstreamInvalid(f"the manifest from {self._url} does not match {digest}")
        return Manifest(digest, body, fetched)

    async def cached_size(self, image: Image, blob: Content) -> int | None:
        async with self._session.head(self._path(image, "blobs", str(blob.digest))) as response:
            # Anything but a hit is fetched; the GET then says what is wrong, if anything.
            if response.status != 200 or response.headers.get(CACHE_HEADER) != "HIT":
                return None
            return response.content_length

    async def fetch_blob(self, image: Image, blob: Content, advance: Callable[[int], None]) -> int:
        hasher = blob.digest.hasher()
        size = 0
        async with self._session.get(self._path(image, "blobs", str(blob.digest))) as response:
            await _check(response)
            async for chunk in response.content.iter_chunked(1024 * 1024):
                hasher.update(chunk)
                size += len(chunk)
                advance(len(chunk))
        if hasher.hexdigest() != blob.digest.hex:
            raise UpstreamInvalid(f"the blob from {self._url} does not match {blob.digest}")
        return size


async def _check(response: aiohttp.ClientResponse) -> None:
    """Raise the server's OCI error for anything but a 200."""
    if response.status == 200:
        return
    code, message = "UNKNOWN", f"HTTP {response.status} from {response.url.origin()}"
    try:
        document: Any = await response.json(content_type=None)
        error = document["errors"][0]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, LookupError, TypeError, aiohttp.ClientError):
        pass
    raise RegistryError(message, code=code, status=response.status)


def _claimed(header: str | None) -> Digest:
    try:
        return Digest.parse(header or "")
    except InvalidDigest:
        raise UpstreamInvalid("the server named no valid Docker-Content-Digest") from None
