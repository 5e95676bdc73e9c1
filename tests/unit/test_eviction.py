"""LRU eviction over a real blob store, index and order: what goes, what stays, in what
order, and which process runs a pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.eviction import Evictor, exclusive
from proxy.cache.lru import Pins
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind, RepoRef, StoredManifest
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex
from proxy.store.diskorder import DiskOrder
from proxy.store.fsblobs import FsBlobStore

REF = RepoRef("docker.io", "library/app")


class Cache:
    def __init__(self, root: Path, max_size: int | None, max_age: float | None) -> None:
        self.store = FsBlobStore(root)
        self.index = DiskIndex(root / "index")
        self.order = DiskOrder(root / "index" / "order.sqlite3")
        self.metrics = Metrics()
        self.usage = Usage(self.index, self.metrics, self.order)
        self.pins = Pins()
        self.lock = root / ".locks" / "evictor"
        self.evictor = Evictor(
            self.store,
            self.index,
            self.order,
            self.usage,
            self.pins,
            self.metrics,
            lock=self.lock,
            max_size=max_size,
            max_age=max_age,
        )

    async def close(self) -> None:
        await self.store.close()
        await self.order.close()
        await self.index.close()

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
    await made.close()


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
    old = Digest.of(b"old" * 10)
    writer = await aged.store.writer(old)
    await writer.write(b"old" * 10)
    await writer.commit()
    await aged.order.stored({(Kind.BLOB, old): (30, 0.0)})  # last served in 1970
    new = await aged.add_blob(b"new" * 10)
    await aged.evictor.evict()
    assert not await aged.has(old)
    assert await aged.has(new)
    await aged.close()


async def first_served_last(tmp_path: Path) -> tuple[Cache, Digest, Digest]:
    """A cache holding two blobs, the first of them served last."""
    before = Cache(tmp_path, max_size=3000, max_age=None)
    await before.store.open()
    first = await before.add_blob(b"1" * 1000)
    second = await before.add_blob(b"2" * 1000)
    before.usage.served(Kind.BLOB, first, REF)
    await before.usage.flush()
    return before, first, second


async def test_the_order_survives_a_restart(tmp_path: Path) -> None:
    before, first, second = await first_served_last(tmp_path)
    await before.close()

    after = Cache(tmp_path, max_size=1000, max_age=None)
    await after.store.open()
    assert await after.order.total() == 2000
    await after.evictor.evict()
    assert not await after.has(second)
    assert await after.has(first)
    await after.close()


async def test_a_cache_without_an_order_is_walked_and_blobs_without_records_adopted(
    tmp_path: Path,
) -> None:
    before, first, second = await first_served_last(tmp_path)
    await before.index.forget(Kind.BLOB, second)  # as if a crash lost the record
    await before.close()
    # As an older version, which kept the order in memory, would have left the directory.
    (tmp_path / "index" / "order.sqlite3").unlink()

    after = Cache(tmp_path, max_size=1000, max_age=None)
    await after.store.open()
    await after.evictor.match(await after.index.generation())
    assert await after.order.total() == 2000
    await after.evictor.evict()
    # The adopted blob's file time is older than first's last serve: it goes first.
    assert not await after.has(second)
    assert await after.has(first)
    await after.close()


async def test_content_removed_by_a_command_leaves_the_order_uncounted(cache: Cache) -> None:
    first = await cache.add_blob(b"1" * 1000)
    await cache.add_blob(b"2" * 1000)
    await cache.evictor.evict()  # matches the order to the stores
    beside = FsBlobStore(cache.store.root)
    assert await beside.delete(first)
    await cache.index.bump_generation()
    await cache.add_blob(b"3" * 1500)
    assert await cache.evictor.evict() == 0  # 3,500 bytes in the order, 2,500 stored
    assert await cache.order.total() == 2500
    assert cache.evicted() == 0


async def test_a_pass_is_skipped_while_another_process_runs_one(cache: Cache) -> None:
    first = await cache.add_blob(b"1" * 2000)
    await cache.add_blob(b"2" * 2000)
    # flock locks are per open file: this one stands for another process's pass.
    with exclusive(cache.lock) as held:
        assert held
        assert await cache.evictor.evict() == 0
        assert await cache.has(first)
    assert await cache.evictor.evict() == 2000
    assert not await cache.has(first)


async def test_two_processes_share_one_order(tmp_path: Path) -> None:
    here, there = Cache(tmp_path, 3000, None), Cache(tmp_path, 3000, None)
    await here.store.open()
    await there.store.open()
    first = await here.add_blob(b"1" * 1000)
    second = await there.add_blob(b"2" * 1000)
    await there.add_blob(b"1" * 1000)  # stored by both: counted once
    here.usage.served(Kind.BLOB, first, REF)
    await here.usage.flush()
    assert await there.order.total() == 2000
    await there.add_blob(b"3" * 1500)
    assert await here.evictor.evict() == 1000
    assert not await there.has(second)
    await here.close()
    await there.close()
