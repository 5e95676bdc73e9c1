"""The index in a diskcache (SQLite) directory beside the blobs.

diskcache operations take well under a millisecond, so they run on the event loop: a
hop to a thread would cost more than the call. Manifests are stored whole; diskcache
keeps large values in files of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import diskcache

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store import Index, UseKey
from proxy.store.memory import check_manifest

# Keys are strings: diskcache stores them as they are, where a tuple key is pickled (and
# optimised) on every call, which was a fifth of the CPU of a cached tag lookup.
# JSON keeps them unambiguous: ("a", "b") and ("a,b",) stay two different accept lists.


def _tag_key(key: TagKey) -> str:
    return json.dumps(["tag", key.upstream, key.repository, key.tag, key.accept])


def _use_key(kind: Kind, digest: Digest) -> str:
    return f"use {kind.value} {digest}"


def _manifest_key(digest: Digest) -> str:
    return f"manifest {digest}"


_MANIFEST_PREFIX = "manifest "
_TAG_PREFIX = '["tag", '
_PINS = "pins"
# 2 MB of SQLite page cache per process, and no memory map. Measured over 20,000 random
# images' lookups (tag, manifest, two blobs' references) of a 2,000- and a 100,000-image
# index: 4 MB of cache, or an 8 MB map, took no less CPU per lookup than this (15-20 us,
# within the noise), and 1 MB took about a quarter more at 2,000 images. Both count in RSS
# as they fill, the map's pages once per process that touched them.
SQLITE_CACHE_PAGES = 512  # of 4 KiB
SQLITE_MMAP_BYTES = 0
_GENERATION = "generation"
USES_PER_TRANSACTION = 256


class DiskIndex(Index):
    def __init__(self, directory: Path) -> None:
        # diskcache culls entries past 1 GB by default; losing a manifest or a usage record
        # silently is not acceptable, and eviction is regcache's own decision. Its SQLite
        # page cache (32 MB) and memory map (64 MB) by default fill up as a large index is
        # read, and count in the server's resident memory: 2 MB serve the hot entries.
        self._cache = diskcache.Cache(
            str(directory),
            eviction_policy="none",
            size_limit=2**62,
            sqlite_cache_size=SQLITE_CACHE_PAGES,
            sqlite_mmap_size=SQLITE_MMAP_BYTES,
        )
        # Manifests this process stored or deleted: whether a command must tell a running server.
        self.changes = 0

    async def get_manifest(self, digest: Digest) -> StoredManifest | None:
        value: Any = self._cache.get(_manifest_key(digest))
        if value is None:
            return None
        media_type, body = value
        return StoredManifest(digest, media_type, body)

    async def put_manifest(self, manifest: StoredManifest) -> None:
        check_manifest(manifest)
        self._cache.set(_manifest_key(manifest.digest), (manifest.media_type, manifest.body))
        self.changes += 1

    async def put_manifest_tagged(
        self, manifest: StoredManifest, tags: Sequence[tuple[TagKey, TagEntry]]
    ) -> None:
        # One commit: a cold pull's manifest and its tag's two keys were three.
        with self._cache.transact():
            await self.put_manifest(manifest)
            await self.put_tags(tags)

    async def delete_manifest(self, digest: Digest) -> bool:
        deleted = bool(self._cache.delete(_manifest_key(digest)))
        self.changes += deleted
        return deleted

    async def manifest_sizes(self) -> AsyncIterator[tuple[Digest, int]]:
        # diskcache pages through the keys in order, a hundred at a time: keys written or
        # deleted meanwhile do not upset it, and the cache's keys are never all in memory.
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(_MANIFEST_PREFIX):
                value: Any = self._cache.get(key)
                if value is not None:
                    yield Digest.parse(key[len(_MANIFEST_PREFIX) :]), len(value[1])

    async def get_tag(self, key: TagKey) -> TagEntry | None:
        value: Any = self._cache.get(_tag_key(key))
        if value is None:
            return None
        digest, media_type, size, checked_at = value
        return TagEntry(Digest.parse(digest), media_type, size, checked_at)

    async def put_tag(self, key: TagKey, entry: TagEntry) -> None:
        value = (str(entry.digest), entry.media_type, entry.size, entry.checked_at)
        self._cache.set(_tag_key(key), value)

    async def put_tags(self, entries: Sequence[tuple[TagKey, TagEntry]]) -> None:
        with self._cache.transact():  # one commit
            for key, entry in entries:
                await self.put_tag(key, entry)

    async def delete_tag(self, key: TagKey) -> None:
        self._cache.delete(_tag_key(key))

    async def tags(self) -> AsyncIterator[tuple[TagKey, TagEntry]]:
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(_TAG_PREFIX):
                _, upstream, repository, tag, accept = json.loads(key)
                tag_key = TagKey(upstream, repository, tag, tuple(accept))
                entry = await self.get_tag(tag_key)
                if entry is not None:  # deleted meanwhile, by this or another process
                    yield tag_key, entry

    async def put_pin(self, name: str, contents: frozenset[Digest]) -> None:
        # One key for all pins, in a transaction: the evictor reads them all at once, and
        # warm and unpin in other processes change them.
        with self._cache.transact():
            pins: dict[str, list[str]] = self._cache.get(_PINS) or {}
            pins[name] = sorted(str(digest) for digest in contents)
            self._cache.set(_PINS, pins)

    async def delete_pin(self, name: str) -> bool:
        with self._cache.transact():
            pins: dict[str, list[str]] = self._cache.get(_PINS) or {}
            found = pins.pop(name, None) is not None
            self._cache.set(_PINS, pins)
        return found

    async def pins(self) -> dict[str, frozenset[Digest]]:
        pins: dict[str, list[str]] = self._cache.get(_PINS) or {}
        return {name: frozenset(Digest.parse(d) for d in digests) for name, digests in pins.items()}

    async def record_use(self, kind: Kind, digest: Digest, ref: RepoRef, when: float) -> None:
        await self.record_uses({(kind, digest, ref): when})

    async def record_uses(self, uses: Mapping[UseKey, float]) -> None:
        # Transactions, because other processes (replicas, tools) may share this index; a
        # few hundred records each, as a commit apiece was most of a cold pull's index time,
        # while a transaction holds the other processes' writes back.
        records = list(uses.items())
        for start in range(0, len(records), USES_PER_TRANSACTION):
            with self._cache.transact():
                for (kind, digest, ref), when in records[start : start + USES_PER_TRANSACTION]:
                    key = _use_key(kind, digest)
                    known: dict[tuple[str, str], float] = self._cache.get(key) or {}
                    pair = (ref.upstream, ref.repository)
                    known[pair] = max(when, known.get(pair, when))
                    self._cache.set(key, known)

    async def references(self, kind: Kind, digest: Digest) -> dict[RepoRef, float]:
        uses: dict[tuple[str, str], float] = self._cache.get(_use_key(kind, digest)) or {}
        return {RepoRef(up, repo): when for (up, repo), when in uses.items()}

    async def forget(self, kind: Kind, digest: Digest) -> None:
        self._cache.delete(_use_key(kind, digest))

    async def generation(self) -> int:
        value: Any = self._cache.get(_GENERATION, 0)
        return int(value)

    async def bump_generation(self) -> int:
        # diskcache's incr is a transaction of its own: bumps from several processes add up.
        return int(self._cache.incr(_GENERATION))

    async def close(self) -> None:
        self._cache.close()
