"""What the cache's images still need, and what nothing needs any more: rm and prune.

Content is reachable from the manifests the remaining tags point at (an index, its child
manifests, their configs and layers) and from the pinned images' digests; content the
images being removed reached, and no one else does, is garbage. Only the index and the
blob store are read, so this works on a directory a server is using too: the server
fetches again what it finds gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.cache.images import TaggedImage
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.oci.manifest import references
from proxy.store import BlobStore, Index


@dataclass
class Content:
    manifests: set[Digest] = field(default_factory=set)
    blobs: set[Digest] = field(default_factory=set)

    def update(self, other: Content) -> None:
        self.manifests |= other.manifests
        self.blobs |= other.blobs


@dataclass(frozen=True, slots=True)
class Garbage:
    kind: Kind
    digest: Digest
    size: int


async def reachable(index: Index, roots: Iterable[Digest]) -> Content:
    """The manifests from ``roots`` down, and the blobs they name (cached or not)."""
    found = Content()
    todo = list(roots)
    while todo:
        digest = todo.pop()
        if digest in found.manifests:
            continue
        found.manifests.add(digest)
        stored = await index.get_manifest(digest)
        if stored is None:
            continue
        named = references(stored.body)
        found.blobs.update(named.blobs)
        todo.extend(named.manifests)
    return found


async def pinned(index: Index) -> Content:
    """Everything the pinned images hold: never garbage, whatever their tags say."""
    digests = {digest for contents in (await index.pins()).values() for digest in contents}
    # A pin lists manifests and blobs alike; the walk adds what its manifests name anyway.
    kept = await reachable(index, digests)
    kept.blobs |= digests
    return kept


async def garbage(
    index: Index, store: BlobStore, candidates: Content, keep: Content
) -> list[Garbage]:
    """The candidates that are cached and not kept, manifests first."""
    found = []
    for digest in sorted(candidates.manifests - keep.manifests, key=str):
        stored = await index.get_manifest(digest)
        if stored is not None:
            found.append(Garbage(Kind.MANIFEST, digest, len(stored.body)))
    for digest in sorted(candidates.blobs - keep.blobs, key=str):
        size = await store.size(digest)
        if size is not None:
            found.append(Garbage(Kind.BLOB, digest, size))
    return found


async def unused_since(index: Index, store: BlobStore, cutoff: float, keep: Content) -> Content:
    """Cached content outside ``keep`` that no repository used since ``cutoff``: what images
    pulled by digest alone, or left behind by a tag that moved, hold. A blob without records
    counts from when it was stored; a manifest without records is left alone."""
    found = Content()
    async for digest, _ in index.manifest_sizes():
        uses = await index.references(Kind.MANIFEST, digest)
        if digest not in keep.manifests and uses and max(uses.values()) < cutoff:
            found.manifests.add(digest)
    async for digest in store.digests():
        if digest in keep.blobs:
            continue
        uses = await index.references(Kind.BLOB, digest)
        info = await store.stat(digest)
        last = max(uses.values()) if uses else info.modified if info is not None else None
        if last is not None and last < cutoff:
            found.blobs.add(digest)
    return found


async def collect(
    index: Index,
    store: BlobStore,
    removed: Iterable[Digest],
    remaining: Iterable[TaggedImage],
    unused_before: float | None = None,
) -> list[Garbage]:
    """What goes with the images whose manifests are ``removed``: all those reach that
    neither the ``remaining`` images nor a pin reach; with ``unused_before``, also what no
    image reaches and was last used before that time."""
    keep = await pinned(index)
    keep.update(await reachable(index, (d for image in remaining for d in image.digests)))
    candidates = await reachable(index, removed)
    if unused_before is not None:
        candidates.update(await unused_since(index, store, unused_before, keep))
    return await garbage(index, store, candidates, keep)


async def delete(index: Index, store: BlobStore, items: Iterable[Garbage]) -> int:
    """Delete the content and its records; the bytes freed."""
    freed = 0
    for item in items:
        if item.kind is Kind.MANIFEST:
            gone = await index.delete_manifest(item.digest)
        else:
            gone = await store.delete(item.digest)
        await index.forget(item.kind, item.digest)
        freed += item.size if gone else 0
    return freed
