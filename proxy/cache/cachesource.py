"""The cache directory as a warm's source, filled from the config's upstreams through the
same manifest and blob caches the server uses (verification, single flight, usage and
reference records alike)."""

from __future__ import annotations

from collections.abc import Callable

from proxy.cache.blobs import BlobCache
from proxy.cache.manifests import ManifestCache
from proxy.cache.references import MANIFEST_TYPES
from proxy.cache.warming import Image, Manifest
from proxy.errors import UpstreamUnavailable
from proxy.oci.contents import Content
from proxy.oci.mediatypes import accepted_types
from proxy.oci.reference import Reference
from proxy.routing import Router, Target
from proxy.store import BlobStore

# Every manifest type, so a tag resolves to what the upstream holds: the whole index of a
# multi-platform image. Sorted as the tag index keys a client's Accept list.
ACCEPT = accepted_types(MANIFEST_TYPES)


class CacheSource:
    """``refresh``: resolve tags at the upstream again whatever their TTL, as a schedule
    that follows a tag must; otherwise a tag is what a client would be served now."""

    def __init__(
        self,
        manifests: ManifestCache,
        blobs: BlobCache,
        store: BlobStore,
        router: Router,
        *,
        refresh: bool = False,
    ) -> None:
        self._manifests = manifests
        self._blobs = blobs
        self._store = store
        self._router = router
        self._refresh = refresh

    def _target(self, image: Image) -> Target:
        return self._router.route(image.repository, image.registry)

    async def manifest(self, image: Image, reference: Reference) -> Manifest:
        target = self._target(image)
        if self._refresh and reference.tag is not None:
            answer = await self._manifests.refresh(target, reference.tag, ACCEPT)
        else:
            answer = await self._manifests.get(target, reference, ACCEPT, False)
        assert answer.body is not None, "a GET answers with the body"
        return Manifest(answer.digest, answer.body, fetched=answer.result == "miss")

    async def cached_size(self, image: Image, blob: Content) -> int | None:
        # The image's manifest, served for its repository, taught the cache that the
        # repository references the blob: nothing to check with the upstream here.
        return await self._store.size(blob.digest)

    async def fetch_blob(self, image: Image, blob: Content, advance: Callable[[int], None]) -> int:
        async with self._blobs.open(self._target(image), blob.digest) as opened:
            async for piece in opened.pieces(0, opened.size):
                advance(len(piece) if isinstance(piece, bytes) else piece.count)
        # Read to the end means verified and stored, unless the disk filled up meanwhile.
        size = await self._store.size(blob.digest)
        if size is None:
            raise UpstreamUnavailable(f"{blob.digest} was fetched but not stored (disk full?)")
        return size
