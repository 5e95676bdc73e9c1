"""Fetching an image into the cache through the server's own machinery (the manifest cache,
one verified download per blob, references learned for its repository), for
``regcache export --fetch``: just enough to make an image whole before it is exported."""

from __future__ import annotations

from proxy.cache.references import MANIFEST_TYPES
from proxy.model import Kind, StoredManifest
from proxy.oci.digest import Digest
from proxy.oci.manifest import references
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.server.cacheparts import CacheParts

ACCEPT = tuple(sorted(MANIFEST_TYPES))


async def fetch_image(parts: CacheParts, target: Target, reference: Reference) -> Digest:
    """The image's top manifest digest, once it and everything under it (every platform of
    an index) is in the cache. Raises the upstream's RegistryError."""
    answer = await parts.manifests.get(target, reference, ACCEPT, head=False)
    await _fetch_content(parts, target, answer.digest, set())
    return answer.digest


async def _fetch_content(
    parts: CacheParts, target: Target, digest: Digest, seen: set[Digest]
) -> None:
    seen.add(digest)
    stored = await parts.index.get_manifest(digest)
    if stored is None:
        answer = await parts.manifests.get(target, Reference(digest=digest), ACCEPT, head=False)
        assert answer.body is not None, "a GET has a body"
        stored = StoredManifest(answer.digest, answer.media_type, answer.body)
    parts.usage.learn_manifest(stored, target.ref)
    found = references(stored.body)
    for blob in found.blobs:
        if await parts.store.size(blob) is None:
            download = await parts.blobs.downloads.join(target, blob)
            await download.wait_done()
            parts.usage.learn(Kind.BLOB, blob, target.ref)
    for child in found.manifests:
        if child not in seen:
            await _fetch_content(parts, target, child, seen)
