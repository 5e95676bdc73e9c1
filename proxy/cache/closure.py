"""What an image needs, from its top manifest down: the manifests and blobs that make it whole.

The rule, shared by export (is the image whole in the cache?) and import (is it whole once the
bundle is in?): every blob a manifest lists is needed. The manifests an index lists are its
platforms, and an image may be cached for some of them only (warmed for linux/amd64, say):
those present are needed whole, those absent are left out, and an index with none of its
platforms present is not an image at all. A referrer's ``subject`` is optional in the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.model import StoredManifest
from proxy.oci.digest import Digest
from proxy.oci.manifest import references

ManifestLookup = Callable[[Digest], Awaitable[StoredManifest | None]]
BlobLookup = Callable[[Digest], Awaitable[int | None]]
# Missing content named in a message, at most; a count stands for the rest.
SHOWN_MISSING = 5


@dataclass
class Closure:
    root: Digest
    manifests: list[StoredManifest] = field(default_factory=list)  # present; the root first
    blobs: dict[Digest, int] = field(default_factory=dict)  # present, with their sizes
    missing: list[str] = field(default_factory=list)  # "blob sha256:..." and the like

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def size(self) -> int:
        return sum(len(m.body) for m in self.manifests) + sum(self.blobs.values())

    def lacking(self) -> str:
        """What is missing, for a message: the first few, and how many more."""
        more = len(self.missing) - SHOWN_MISSING
        shown = ", ".join(self.missing[:SHOWN_MISSING])
        return shown + (f" and {more} more" if more > 0 else "")

    def digests(self) -> frozenset[Digest]:
        return frozenset(m.digest for m in self.manifests) | frozenset(self.blobs)


async def image_closure(
    root: Digest, manifest_of: ManifestLookup, blob_size: BlobLookup
) -> Closure:
    closure = Closure(root)
    manifest = await manifest_of(root)
    if manifest is None:
        closure.missing.append(f"manifest {root}")
    else:
        await _walk(manifest, closure, manifest_of, blob_size, set())
    return closure


async def _walk(
    manifest: StoredManifest,
    closure: Closure,
    manifest_of: ManifestLookup,
    blob_size: BlobLookup,
    seen: set[Digest],
) -> None:
    seen.add(manifest.digest)
    closure.manifests.append(manifest)
    found = references(manifest.body)
    for digest in found.blobs:
        if digest in closure.blobs:
            continue
        size = await blob_size(digest)
        if size is None:
            closure.missing.append(f"blob {digest} (of manifest {manifest.digest})")
        else:
            closure.blobs[digest] = size
    present = 0
    for digest in found.manifests:
        child = None if digest in seen else await manifest_of(digest)
        if child is not None:
            present += 1
            await _walk(child, closure, manifest_of, blob_size, seen)
    if found.manifests and not found.blobs and not present:
        closure.missing.append(
            f"every platform manifest of index {manifest.digest} ({len(found.manifests)})"
        )
