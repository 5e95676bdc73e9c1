"""cache.max_size and cache.max_age over a fleet: two in-process replicas sharing one Redis
(the session's, under a prefix of the test's) and one bucket of Ceph's RADOS Gateway.

The bucket is listed to see what the fleet holds; the order in Redis is read as another
replica would read it, to wait until a replica's uses or claims have reached it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.fleet.leases import Holder, Lease, Leases
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store.redisindex import RedisIndex
from proxy.store.redisorder import RedisOrder
from proxy.store.s3blobs import S3BlobStore
from proxy.store.s3calls import S3Location
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import FakeRegistry
from tests.support.inproxy import InProcessRegcache
from tests.support.redisserver import RedisServer

MIB = 1024 * KIB
BLOB = 100 * KIB


@pytest.fixture
async def index(redis_settings: dict[str, Any]) -> AsyncIterator[RedisIndex]:
    opened = RedisIndex(redis_settings["index_redis_url"], redis_settings["index_redis_prefix"])
    yield opened
    await opened.close()


@pytest.fixture
def order(index: RedisIndex) -> RedisOrder:
    return RedisOrder(index)


@pytest.fixture
async def bucket(s3_settings: dict[str, Any], tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    """The fleet's bucket, as another process would open it (never cleaning it)."""
    location = S3Location(
        bucket=s3_settings["storage_s3_bucket"],
        endpoint=s3_settings["storage_s3_endpoint"],
        region=s3_settings["storage_s3_region"],
        prefix=s3_settings["storage_s3_prefix"],
        access_key_id=s3_settings["storage_s3_access_key_id"],
        secret_access_key=s3_settings["storage_s3_secret_access_key"],
    )
    store = S3BlobStore(location, tmp_path / "lister")
    await store.open(clean=False)
    yield store
    await store.close()


Fleet = Callable[..., Awaitable[tuple[InProcessRegcache, InProcessRegcache]]]


@pytest.fixture
def fleet(
    make_proxy: ProxyFactory, s3_settings: dict[str, Any], redis_settings: dict[str, Any]
) -> Fleet:
    """``a, b = await fleet(cache_max_size=...)``: two replicas of one cache."""

    async def start(
        b_max_size: int | None = None, **bounds: Any
    ) -> tuple[InProcessRegcache, InProcessRegcache]:
        shared = {**s3_settings, **redis_settings, **bounds}
        a = await make_proxy(replica_name="a", **shared)
        if b_max_size is not None:
            shared["cache_max_size"] = b_max_size
        b = await make_proxy(replica_name="b", **shared)
        return a, b

    return start


async def held(bucket: S3BlobStore) -> dict[str, int]:
    """What the bucket holds: digest -> size."""
    found = {}
    async for digest in bucket.digests():
        info = await bucket.stat(digest)
        if info is not None:
            found[str(digest)] = info.size
    return found


async def pull(regcache: InProcessRegcache, digest: str, size: int) -> None:
    async with asyncio.timeout(30):  # a failure to read, rather than a test that never ends
        answer = await regcache.get(blob_path(digest))
    assert answer.status == 200
    assert len(answer.body) == size


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (15 s at most) for ``condition``: uses reach Redis in batches, claims lapse."""
    for _ in range(300):
        async with asyncio.timeout(30):
            if await condition():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {what}")


async def evictions(*replicas: InProcessRegcache) -> float:
    return sum([await regcache.metric("regcache_evictions_total") for regcache in replicas])


def blobs(registry: FakeRegistry, count: int, size: int = BLOB) -> list[str]:
    return [registry.add_blob(bytes([i + 1]) * size) for i in range(count)]


def key(digest: str) -> tuple[Kind, Digest]:
    return Kind.BLOB, Digest.parse(digest)


async def test_the_least_recently_used_across_the_fleet_goes_and_the_bucket_fits(
    fleet: Fleet, registry: FakeRegistry, bucket: S3BlobStore, order: RedisOrder
) -> None:
    bound = 350 * KIB
    a, b = await fleet(cache_max_size=bound)
    first, second, third, fourth = blobs(registry, 4)
    await pull(b, first, BLOB)  # stored by b; a never serves it
    await pull(a, second, BLOB)
    await pull(a, third, BLOB)
    await pull(b, first, BLOB)  # now the most recently used, on b only

    async def recorded() -> bool:
        oldest = [ranked.key for ranked in await order.oldest(0, 3)]
        return oldest[-1] == key(first)

    await until(recorded, "recorded b's use of the first blob")

    async def released() -> bool:
        return not await order.in_use([key(first)])

    # Its claim lapsed too: what keeps it now is the order alone.
    await until(released, "dropped b's claim")
    await pull(a, fourth, BLOB)

    async def fits() -> bool:
        return sum((await held(bucket)).values()) <= bound

    await until(fits, "evicted down to max_size")
    assert set(await held(bucket)) == {first, third, fourth}
    assert await evictions(a, b) == 1
    assert await order.total() == 3 * BLOB
    # Evicted means fetched again; kept means not.
    await pull(b, second, BLOB)
    await pull(a, first, BLOB)
    assert registry.count("GET", blob_path(second)) == 2
    assert registry.count("GET", blob_path(first)) == 1


async def test_a_blob_one_replica_is_sending_is_not_evicted_by_another(
    fleet: Fleet, registry: FakeRegistry, bucket: S3BlobStore, order: RedisOrder
) -> None:
    # Big enough that the response is still being sent while the client reads nothing.
    big_size = 12 * MIB
    bound = big_size + 350 * KIB
    # b's bound is never reached: a runs the pass, which must learn of b's response from Redis.
    a, b = await fleet(cache_max_size=bound, b_max_size=100 * MIB)
    big = registry.add_blob(b"b" * big_size)
    small, newer = blobs(registry, 2, 300 * KIB)
    await pull(a, big, big_size)

    async def unclaimed() -> bool:
        return not await order.in_use([key(big)])

    await until(unclaimed, "dropped a's claim on the big blob")
    async with b.client.get(blob_path(big)) as response:
        assert response.status == 200
        start = await response.content.readexactly(KIB)

        async def claimed() -> bool:
            return bool(await order.in_use([key(big)]))

        await until(claimed, "claimed the big blob for b's response")
        # Used after b's response began: the big blob is the least recently used.
        await pull(a, small, 300 * KIB)
        await pull(a, newer, 300 * KIB)

        async def evicted() -> bool:
            return await evictions(a, b) >= 1

        await until(evicted, "evicted")
        assert set(await held(bucket)) == {big, newer}
        async with asyncio.timeout(60):
            rest = await response.read()
    assert start + rest == b"b" * big_size
    assert await evictions(a, b) == 1


async def test_one_replica_evicts_at_a_time_and_never_what_is_downloading(
    fleet: Fleet,
    registry: FakeRegistry,
    bucket: S3BlobStore,
    index: RedisIndex,
    order: RedisOrder,
) -> None:
    bound = 350 * KIB
    a, b = await fleet(cache_max_size=bound)
    elsewhere = Leases(index.redis, index.prefix, Holder("elsewhere", None), ttl=60)
    taken: list[Lease] = []

    async def evictor_lease() -> bool:
        # A replica's first pass runs at its start, under the lease: it is free once done.
        found = await elsewhere.acquire("evictor")
        taken.extend([found] if found is not None else [])
        return found is not None

    await until(evictor_lease, "the replicas' first passes to let go of the evictor lease")
    lease = taken[0]
    digests = blobs(registry, 5)
    for i, digest in enumerate(digests):
        await pull((a, b)[i % 2], digest, BLOB)
    # Both replicas look every 50 ms (the fast suite's FOLLOW_EVERY): none may evict.
    await asyncio.sleep(0.5)
    assert len(await held(bucket)) == 5
    assert await evictions(a, b) == 0

    async def released() -> bool:
        return not await order.in_use([key(digest) for digest in digests])

    await until(released, "dropped the claims of the responses")  # the order alone decides
    # The coldest blob is being downloaded again somewhere (its lease is held): it stays.
    downloading = await elsewhere.acquire(f"blob:{digests[0]}")
    assert downloading is not None
    await lease.release()

    async def fits() -> bool:
        return sum((await held(bucket)).values()) <= bound

    await until(fits, "evicted down to max_size")
    # Evicted once the lease came free, by one of them: what the bound needs, no more.
    assert set(await held(bucket)) == {digests[0], *digests[3:]}
    assert await evictions(a, b) == 2
    await downloading.release()


async def test_max_age_counts_uses_on_every_replica(
    fleet: Fleet, registry: FakeRegistry, bucket: S3BlobStore
) -> None:
    a, b = await fleet(cache_max_age=4.0)
    kept, aged = blobs(registry, 2)
    await pull(a, kept, BLOB)
    await pull(a, aged, BLOB)

    async def aged_out() -> bool:
        return aged not in await held(bucket)

    # b serves one of them now and then (a never again): only the other ages out.
    for _ in range(300):
        await pull(b, kept, BLOB)
        if await aged_out():
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError("the blob nobody used was never evicted")
    assert kept in await held(bucket)

    async def emptied() -> bool:
        return not await held(bucket)

    await until(emptied, "evicted the blob once b stopped using it")

    async def counted() -> bool:
        # Counted once its deletion is done, which is after the bucket lost it.
        return await evictions(a, b) == 2

    await until(counted, "counted both evictions")


async def test_without_redis_nothing_is_evicted_and_when_it_is_back_the_bucket_fits(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    bucket: S3BlobStore,
    s3_settings: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bound = 350 * KIB
    # A Redis of its own, to stop and start again (empty) without disturbing other tests.
    with RedisServer(work_dir=tmp_path / "redis") as server:
        settings = {"index_backend": "redis", "index_redis_url": server.url, **s3_settings}
        regcache = await make_proxy(cache_max_size=bound, replica_name="a", **settings)
        digests = blobs(registry, 5)
        await pull(regcache, digests[0], BLOB)
        server.stop()
        for digest in digests[1:]:
            await pull(regcache, digest, BLOB)
        await asyncio.sleep(0.5)  # passes every 50 ms: each must skip, not delete blind
        assert len(await held(bucket)) == 5
        assert await regcache.metric("regcache_evictions_total") == 0
        assert caplog.text.count("Redis index unreachable") == 1

        server.start()  # empty: the order is made again from the bucket

        async def fits() -> bool:
            return sum((await held(bucket)).values()) <= bound

        await until(fits, "evicted down to max_size once Redis was back")
        assert await regcache.metric("regcache_evictions_total") == 2
