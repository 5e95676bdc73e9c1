"""A running regcache as the source of ``regcache warm --server``: over HTTP, it caches what
it is asked for. (The cache directory itself is proxy.cache.cachesource.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from proxy.cache.cachesource import ACCEPT
from proxy.cache.warming import Image, Manifest
from proxy.errors import RegistryError, UpstreamInvalid
from proxy.oci.contents import Content
from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.mediatypes import MAX_MANIFEST_BYTES
from proxy.oci.reference import Reference
from proxy.server.handlers import CACHE_HEADER


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
