"""An index held in memory: the reference implementation of the index interfaces.

Used where nothing needs to survive a restart, and as the yardstick the conformance
suite holds every other index to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store import DigestMismatch, Index


def check_manifest(manifest: StoredManifest) -> None:
    if not manifest.digest.matches(manifest.body):
        actual = Digest.of(manifest.body, manifest.digest.algorithm)
        raise DigestMismatch(manifest.digest, str(actual), len(manifest.body))


class MemoryIndex(Index):
    def __init__(self) -> None:
        self._manifests: dict[Digest, StoredManifest] = {}
        self._tags: dict[TagKey, TagEntry] = {}
        self._uses: dict[tuple[Kind, Digest], dict[RepoRef, float]] = {}
        self._pins: dict[str, frozenset[Digest]] = {}
        self._generation = 0

    async def get_manifest(self, digest: Digest) -> StoredManifest | None:
        return self._manifests.get(digest)

    async def put_manifest(self, manifest: StoredManifest) -> None:
        check_manifest(manifest)
        self._manifests[manifest.digest] = manifest

    async def delete_manifest(self, digest: Digest) -> bool:
        return self._manifests.pop(digest, None) is not None

    async def manifest_sizes(self) -> AsyncIterator[tuple[Digest, int]]:
        for digest, manifest in list(self._manifests.items()):
            yield digest, len(manifest.body)

    async def get_tag(self, key: TagKey) -> TagEntry | None:
        return self._tags.get(key)

    async def put_tag(self, key: TagKey, entry: TagEntry) -> None:
        self._tags[key] = entry

    async def delete_tag(self, key: TagKey) -> None:
        self._tags.pop(key, None)

    async def tags(self) -> AsyncIterator[tuple[TagKey, TagEntry]]:
        for key, entry in list(self._tags.items()):
            yield key, entry

    async def put_pin(self, name: str, contents: frozenset[Digest]) -> None:
        self._pins[name] = contents

    async def delete_pin(self, name: str) -> bool:
        return self._pins.pop(name, None) is not None

    async def pins(self) -> dict[str, frozenset[Digest]]:
        return dict(self._pins)

    async def record_use(self, kind: Kind, digest: Digest, ref: RepoRef, when: float) -> None:
        uses = self._uses.setdefault((kind, digest), {})
        uses[ref] = max(when, uses.get(ref, when))

    async def references(self, kind: Kind, digest: Digest) -> dict[RepoRef, float]:
        return dict(self._uses.get((kind, digest), {}))

    async def forget(self, kind: Kind, digest: Digest) -> None:
        self._uses.pop((kind, digest), None)

    async def generation(self) -> int:
        return self._generation

    async def bump_generation(self) -> int:
        self._generation += 1
        return self._generation

    async def close(self) -> None:
        pass
