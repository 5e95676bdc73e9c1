"""One image into the cache, as a client's pull would put it there: the manifest, the
chosen platforms' manifests of an index, and every blob they name, each verified against
its digest and recorded as referenced by the image's repository.

Small on purpose, for the scheduled prefetch; ``regcache warm`` fetches images too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.cache.blobs import BlobCache
from proxy.cache.manifests import ManifestAnswer, ManifestCache
from proxy.cache.references import MANIFEST_TYPES
from proxy.oci.digest import Digest
from proxy.oci.manifest import references
from proxy.oci.platforms import index_children, matches
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.store import BlobStore

# Every manifest type, sorted as the tag index keys a client's Accept list.
ACCEPT = tuple(sorted(MANIFEST_TYPES))
# Blobs fetched at once for one image: enough to fill a link, few enough to leave the
# upstream's connections to clients.
BLOB_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class Fetched:
    digest: Digest  # the image's manifest (an index for a multi-platform image)
    fetched_bytes: int  # blob bytes downloaded now
    present_bytes: int  # blob bytes that were cached already


async def fetch_image(
    manifests: ManifestCache,
    blobs: BlobCache,
    store: BlobStore,
    target: Target,
    reference: Reference,
    platforms: tuple[str, ...] = (),
) -> Fetched:
    """Fetch what is missing; a tag is resolved again at the upstream, whatever its TTL.
    ``platforms`` (``os/arch[/variant]``) choose an index's children, all when empty.
    Raises the upstream's error (proxy.errors.RegistryError)."""
    if reference.tag is not None:
        root = await manifests.refresh(target, reference.tag, ACCEPT)
    else:
        root = await manifests.get(target, reference, ACCEPT, head=False)
    images = [root]
    children = index_children(_body(root))
    if children is not None:
        chosen = [child for child in children if matches(child.platform, platforms)]
        images = [
            await manifests.get(target, Reference(digest=child.digest), ACCEPT, False)
            for child in chosen
        ]
    wanted = list(dict.fromkeys(d for image in images for d in references(_body(image)).blobs))
    limit = asyncio.Semaphore(BLOB_CONCURRENCY)

    async def one(digest: Digest) -> tuple[int, int]:
        async with limit:
            return await _fetch_blob(blobs, store, target, digest)

    sizes = await asyncio.gather(*(one(digest) for digest in wanted))
    return Fetched(root.digest, sum(s[0] for s in sizes), sum(s[1] for s in sizes))


async def _fetch_blob(
    blobs: BlobCache, store: BlobStore, target: Target, digest: Digest
) -> tuple[int, int]:
    """(bytes downloaded, bytes already cached)."""
    size = await store.size(digest)
    if size is not None:
        return 0, size
    download = await blobs.downloads.join(target, digest)
    await download.wait_done()
    return download.written, 0


def _body(answer: ManifestAnswer) -> bytes:
    assert answer.body is not None, "a GET answers with the body"
    return answer.body
