"""LRU eviction over a real blob store and index: what goes, what stays, and in what order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.eviction import Evictor
from proxy.cache.lru import Lru, Pins
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind, RepoRef, StoredManifest
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex
from proxy.store.fsblobs import FsBlobStore

REF = RepoRef("docker.io", "library/app")


class Cache:
    def __init__(self, root: Path, max_size: int | None, max_age: float | None) -> None:
        self.store = FsBlobStore(root)
        self.index = DiskIndex(root / "index")
        self.metrics = Metrics()
        self.usage = Usage(self.index, self.metrics, Lru())
        self.pins = Pins()
        self.evictor = Evictor(
            self.store,
            self.index,
            self.usage,
            self.pins,
            self.metrics,
            max_size=max_size,
            max_age=max_age,
        )

    async def add_blob(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        writer = await self.store.writer(digest)
        await writer.write(data)
        await writer.commit()
        self.usage.stored(Kind.BLOB, digest, len(data))
        self.usage.served(Kind.BLOB, digest, REF)
        await self.usage.flush()
        return digest

    async def has(self, digest: Digest) -> bool:
        return await self.store.size(digest) is not None

    def evicted(self, kind: str = "blob") -> float:
        value = self.metrics.registry.get_sample_value("regcache_evictions_total", {"kind": kind})
        return value or 0.0


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[Cache]:
    made = Cache(tmp_path, max_size=3000, max_age=None)
    await made.store.open()
    yield made
    await made.index.close()


async def test_least_recently_served_goes_first(cache: Cache) -> None:
    first = await cache.add_blob(b"1" * 1000)
    second = await cache.add_blob(b"2" * 1000)
    third = await cache.add_blob(b"3" * 1000)
    cache.usage.served(Kind.BLOB, first, REF)  # first is now the most recent
    await cache.add_blob(b"4" * 1000)
    freed = await cache.evictor.evict()
    assert freed == 1000
    assert not await cache.has(second)
    assert await cache.has(first)
    assert await cache.has(third)
    assert await cache.index.references(Kind.BLOB, second) == {}
    assert await cache.store.total_size() == 3000


async def test_pinned_content_is_never_evicted(cache: Cache) -> None:
    first = await cache.add_blob(b"1" * 1000)
    second = await cache.add_blob(b"2" * 1000)
    with cache.pins.hold((Kind.BLOB, first)):
        await cache.add_blob(b"3" * 1500)
        await cache.evictor.evict()
        assert await cache.has(first)
        assert not await cache.has(second)
    assert cache.evicted() == 1


async def test_manifests_are_evicted_too(cache: Cache) -> None:
    body = b'{"schemaVersion":2}' + b" " * 981
    manifest = StoredManifest(Digest.of(body), "application/vnd.oci.image.manifest.v1+json", body)
    await cache.index.put_manifest(manifest)
    cache.usage.stored(Kind.MANIFEST, manifest.digest, len(body))
    for fill in (b"a", b"b", b"c"):
        await cache.add_blob(fill * 1000)
    await cache.evictor.evict()
    assert await cache.index.get_manifest(manifest.digest) is None
    assert cache.evicted("manifest") == 1


async def test_max_age_evicts_what_was_not_served_for_that_long(tmp_path: Path) -> None:
    aged = Cache(tmp_path, max_size=None, max_age=3600)
    await aged.store.open()
    old = await aged.add_blob(b"old" * 10)
    new = await aged.add_blob(b"new" * 10)
    assert aged.usage.lru is not None
    aged.usage.lru.add((Kind.BLOB, old), 30, 0.0)  # last served in 1970
    aged.usage.lru.sort()
    await aged.evictor.evict()
    assert not await aged.has(old)
    assert await aged.has(new)
    await aged.index.close()


async def test_rebuild_restores_the_order_and_adopts_blobs_without_records(
    tmp_path: Path,
) -> None:
    before = Cache(tmp_path, max_size=3000, max_age=None)
    await before.store.open()
    first = await before.add_blob(b"1" * 1000)
    second = await before.add_blob(b"2" * 1000)
    before.usage.served(Kind.BLOB, first, REF)
    await before.usage.flush()
    await before.index.forget(Kind.BLOB, second)  # as if a crash lost the record
    await before.index.close()

    after = Cache(tmp_path, max_size=1000, max_age=None)
    await after.store.open()
    await after.evictor.rebuild()
    assert after.usage.lru is not None
    assert after.usage.lru.total == 2000
    await after.evictor.evict()
    # The adopted blob's file time is older than first's last serve: it goes first.
    assert not await after.has(second)
    assert await after.has(first)
    await after.index.close()
