"""The fleet's eviction order in Redis (proxy.store.redisorder): sizes counted once however
many replicas record a blob, last uses that only move later, and claims that expire.

Two indexes with their own connections stand in for two replicas, as in test_redisindex.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store.redisindex import RedisIndex
from proxy.store.redisorder import RedisOrder
from tests.support.redisserver import RedisServer


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisOrder, RedisOrder]]:
    prefix = f"test-{uuid.uuid4().hex}:"
    first, second = RedisIndex(redis_server.url, prefix), RedisIndex(redis_server.url, prefix)
    yield RedisOrder(first), RedisOrder(second)
    await first.close()
    await second.close()


def blob(n: int) -> tuple[Kind, Digest]:
    return Kind.BLOB, Digest.of(f"layer {n}".encode())


async def test_a_blob_stored_by_two_replicas_at_once_is_counted_once(
    replicas: tuple[RedisOrder, RedisOrder],
) -> None:
    entries = [blob(n) for n in range(50)]
    await asyncio.gather(
        *(
            order.stored({key: (1000 + n, 1.0)})
            for n, key in enumerate(entries)
            for order in replicas
        )
    )
    expected = sum(1000 + n for n in range(50))
    assert await replicas[0].total() == expected
    assert {key async for key in replicas[1].entries()} == set(entries)
    await asyncio.gather(*(replicas[n % 2].removed(key) for n, key in enumerate(entries[:10])))
    await replicas[0].removed(entries[0])  # removed twice: taken off once
    assert await replicas[1].total() == expected - sum(1000 + n for n in range(10))


async def test_uses_keep_the_latest_and_only_of_what_is_stored(
    replicas: tuple[RedisOrder, RedisOrder],
) -> None:
    first, second, never_stored = blob(1), blob(2), blob(3)
    await replicas[0].stored({first: (10, 1.0), second: (20, 2.0)})
    times = [float(t) for t in range(3, 200)]
    random.Random(7).shuffle(times)
    await asyncio.gather(*(replicas[i % 2].used({first: t}) for i, t in enumerate(times)))
    await replicas[1].used({second: 150.0, never_stored: 300.0})
    ranked = await replicas[0].oldest(0, 10)
    assert [(r.key, r.size, r.last_used) for r in ranked] == [
        (second, 20, 150.0),
        (first, 10, 199.0),
    ]
    assert await replicas[0].coldest() == 150.0
    assert [r.key for r in await replicas[0].oldest(1, 10)] == [first]
    # Recorded again (a command's walk adopting it) with an older time: no change.
    await replicas[1].stored({first: (10, 5.0)})
    assert [r.last_used for r in await replicas[0].oldest(0, 10)] == [150.0, 199.0]


async def test_claims_are_seen_by_every_replica_until_released_or_expired(
    replicas: tuple[RedisOrder, RedisOrder],
) -> None:
    a, b = replicas
    one, two, three = blob(1), blob(2), blob(3)
    await a.claim("a", [one, two], [], ttl=60)
    await b.claim("b", [two], [], ttl=0.2)
    assert await b.in_use([one, two, three]) == {one, two}
    await a.claim("a", [], [two], ttl=60)
    assert await b.in_use([one, two, three]) == {one, two}  # still b's
    for _ in range(100):
        if await a.in_use([two]) == set():
            break
        await asyncio.sleep(0.05)
    assert await a.in_use([one, two, three]) == {one}
    assert await a.in_use([]) == set()


async def test_the_generation_the_order_matched_is_shared(
    replicas: tuple[RedisOrder, RedisOrder],
) -> None:
    assert await replicas[0].matched_generation() is None
    await replicas[1].matched(4)
    assert await replicas[0].matched_generation() == 4
