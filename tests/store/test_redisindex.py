"""What only the Redis index has to promise: several processes (replicas, commands) share
one Redis, and several caches may share it under their own key prefixes.

Two clients stand in for two processes: each has its own connections, so their commands
interleave on the server as two replicas' would.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.model import Kind, RepoRef, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store.redisindex import RedisIndex
from tests.support.redisserver import RedisServer

NGINX = RepoRef("docker.io", "library/nginx")
KEY = TagKey("docker.io", "library/nginx", "latest", ())


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisIndex, RedisIndex]]:
    prefix = f"test-{uuid.uuid4().hex}:"
    first, second = RedisIndex(redis_server.url, prefix), RedisIndex(redis_server.url, prefix)
    yield first, second
    await first.close()
    await second.close()


async def test_concurrent_uses_from_two_replicas_keep_the_latest(
    replicas: tuple[RedisIndex, RedisIndex],
) -> None:
    digest = Digest.of(b"popular layer")
    times = [float(t) for t in range(200)]
    random.Random(12).shuffle(times)
    await asyncio.gather(
        *(replicas[i % 2].record_use(Kind.BLOB, digest, NGINX, t) for i, t in enumerate(times))
    )
    for index in replicas:
        assert await index.references(Kind.BLOB, digest) == {NGINX: 199.0}


async def test_concurrent_pins_from_two_replicas_are_all_kept(
    replicas: tuple[RedisIndex, RedisIndex],
) -> None:
    names = [f"docker.io/library/app{i}:1" for i in range(40)]
    await asyncio.gather(
        *(replicas[i % 2].put_pin(name, frozenset()) for i, name in enumerate(names))
    )
    await asyncio.gather(*(replicas[i % 2].delete_pin(name) for i, name in enumerate(names[:10])))
    assert set(await replicas[0].pins()) == set(names[10:])


async def test_what_one_replica_writes_the_other_reads(
    replicas: tuple[RedisIndex, RedisIndex],
) -> None:
    entry = TagEntry(Digest.of(b"{}"), "application/json", 2, 1.5)
    await replicas[0].put_tag(KEY, entry)
    assert await replicas[1].get_tag(KEY) == entry
    assert [key async for key, _ in replicas[1].tags()] == [KEY]


async def test_prefixes_keep_caches_apart(redis_server: RedisServer) -> None:
    one = RedisIndex(redis_server.url, f"one-{uuid.uuid4().hex}:")
    other = RedisIndex(redis_server.url, f"other-{uuid.uuid4().hex}:")
    try:
        await one.put_tag(KEY, TagEntry(Digest.of(b"{}"), "application/json", 2, 1.5))
        await one.put_pin("pinned", frozenset())
        await one.record_use(Kind.BLOB, Digest.of(b"x"), NGINX, 1.0)
        assert await other.get_tag(KEY) is None
        assert [entry async for entry in other.tags()] == []
        assert await other.pins() == {}
        assert await other.references(Kind.BLOB, Digest.of(b"x")) == {}
    finally:
        await one.close()
        await other.close()
