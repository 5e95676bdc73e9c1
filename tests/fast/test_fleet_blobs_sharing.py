"""Replicas of one fleet fetch each blob once between them (issue 12).

In-process replicas share the session's Redis (under a prefix of the test's own) and a bucket
of the session's Ceph gateway, each on its own cache directory and port, advertising its own
address. The replica that gets a blob's lease downloads it; the others stream it from that
owner's peer endpoint, or wait for the stored blob when they cannot reach it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

import proxy.cache.fleetsource
from tests.fast.conftest import KIB, MIB, StartReplica, blob_path, stall_once
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.fleetblobs import all_received, is_now, sha256, streamed, total, until
from tests.support.ports import free_port


async def test_concurrent_pulls_across_replicas_fetch_each_blob_once(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage
) -> None:
    replicas = [await start_replica(f"r{n}") for n in range(3)]
    digest, layer = big.layer_digests[0], big.layers[0]
    registry.faults.append(stall_once(digest, after=256 * KIB, seconds=0.5))
    ranged = {"Range": "bytes=1000000-2999999"}
    asked = [
        streamed(replica.url + blob_path(digest), headers)
        for replica in replicas
        for headers in (None, None, None, ranged)
    ]
    answers = await asyncio.gather(*asked)
    whole, part = (200, sha256(layer), len(layer)), (206, sha256(layer[1000000:3000000]), 2000000)
    assert answers == [whole, whole, whole, part] * 3
    assert registry.count("GET", blob_path(digest)) == 1
    # The followers streamed from the owner, which sent them what they received.
    received = await total(replicas, "regcache_peer_stream_bytes", direction="received")
    assert received >= len(layer)
    assert received == await total(replicas, "regcache_peer_stream_bytes", direction="sent")
    assert await total(replicas, "regcache_lease_waits", kind="blob") == 2
    assert await total(replicas, "regcache_lease_takeovers") == 0

    # Stored once, in the bucket every replica reads.
    for replica in replicas:
        again = await replica.get(blob_path(digest))
        assert (again.status, again.headers["X-Cache"]) == (200, "HIT")
        assert again.body == layer
    assert registry.count("GET", blob_path(digest)) == 1


async def test_a_follower_that_asks_before_the_upstream_answered_the_owner_streams_at_once(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage
) -> None:
    owner = await start_replica("owner", read_timeout=60.0)
    follower = await start_replica("follower")
    digest, layer = big.layer_digests[0], big.layers[0]
    # The upstream takes a while to answer the owner at all, then stops mid-blob until told.
    release = asyncio.Event()
    stalled = Fault(
        path=blob_path(digest), method="GET", delay=0.5, stall=(MIB, 60.0), release=release, times=1
    )
    registry.faults.append(stalled)
    first = asyncio.create_task(streamed(owner.url + blob_path(digest)))
    await until(lambda: is_now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
    second = asyncio.create_task(streamed(follower.url + blob_path(digest)))
    # The follower streams what the owner has while the owner's download is still under way.
    await until(lambda: all_received([follower], MIB), "the follower to stream from the owner")
    release.set()
    whole = (200, sha256(layer), len(layer))
    assert (await first, await second) == (whole, whole)
    assert registry.count("GET", blob_path(digest)) == 1


async def test_replicas_on_disks_of_their_own_still_fetch_once_and_each_store_a_copy(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage
) -> None:
    replicas = [await start_replica(f"r{n}", storage_backend="local") for n in range(2)]
    digest, layer = big.layer_digests[0], big.layers[0]
    registry.faults.append(stall_once(digest, after=256 * KIB, seconds=0.5))
    asked = [streamed(replica.url + blob_path(digest)) for replica in replicas * 2]
    assert await asyncio.gather(*asked) == [(200, sha256(layer), len(layer))] * 4
    assert registry.count("GET", blob_path(digest)) == 1
    for replica in replicas:
        assert [path.read_bytes() for path in replica.files("blobs")] == [layer]


async def test_a_replica_whose_owner_gave_no_url_waits_and_reads_the_stored_blob(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage
) -> None:
    owner = await start_replica("owner", advertise=False)
    follower = await start_replica("follower")
    digest, layer = big.layer_digests[0], big.layers[0]
    registry.faults.append(stall_once(digest, after=256 * KIB, seconds=0.5))
    first = asyncio.create_task(streamed(owner.url + blob_path(digest)))
    await until(lambda: is_now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
    answer = await streamed(follower.url + blob_path(digest), {"Range": "bytes=100-"})
    assert answer == (206, sha256(layer[100:]), len(layer) - 100)
    assert await first == (200, sha256(layer), len(layer))
    assert registry.count("GET", blob_path(digest)) == 1
    assert await follower.metric("regcache_peer_stream_bytes", direction="received") == 0


async def test_a_repository_that_does_not_hold_the_blob_gets_no_byte_of_a_peers_download(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage
) -> None:
    owner, follower = await start_replica("owner"), await start_replica("follower")
    digest, layer = big.layer_digests[0], big.layers[0]
    registry.faults.append(stall_once(digest, after=256 * KIB, seconds=0.5))
    first = asyncio.create_task(streamed(owner.url + blob_path(digest)))
    await until(lambda: is_now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
    # The owner's download is under way; the upstream says library/other has no such blob.
    other = await follower.get(blob_path(digest, "library/other"))
    assert (other.status, other.error_code) == (404, "BLOB_UNKNOWN")
    assert await follower.metric("regcache_peer_stream_bytes", direction="received") == 0
    assert await first == (200, sha256(layer), len(layer))
    # Stored now; still not for library/other.
    again = await follower.get(blob_path(digest, "library/other"))
    assert (again.status, again.error_code) == (404, "BLOB_UNKNOWN")
    assert registry.count("GET", blob_path(digest)) == 1


@pytest.mark.parametrize("url", ["unreachable", None])
async def test_a_lease_held_by_a_replica_nobody_can_follow_is_waited_out_then_fetched_unshared(
    start_replica: StartReplica,
    registry: FakeRegistry,
    big: FakeImage,
    fleet_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    url: str | None,
) -> None:
    # Production waits three lease lifetimes for a holder it cannot reach, a minute for one
    # that gave no URL; the fallback is what is tested here, not the waits.
    monkeypatch.setattr(proxy.cache.fleetsource, "PATIENCE_LEASES", 0.1)
    monkeypatch.setattr(proxy.cache.fleetsource, "NO_URL_PATIENCE", 0.3)
    replica = await start_replica("r0")
    digest, layer = big.layer_digests[0], big.layers[0]
    ghost = {
        "replica": "ghost",
        "url": f"http://127.0.0.1:{free_port()}" if url else None,
        "token": "0",
    }
    key = f"{fleet_settings['index_redis_prefix']}lease:blob:{digest}"
    async with Redis.from_url(fleet_settings["index_redis_url"]) as redis:
        await redis.set(key, json.dumps(ghost), px=60_000)
    answer = await streamed(replica.url + blob_path(digest))
    assert answer == (200, sha256(layer), len(layer))
    assert registry.count("GET", blob_path(digest)) == 1
    assert await replica.metric("regcache_lease_takeovers") == 0
    # Fetched unshared, and stored all the same.
    again = await replica.get(blob_path(digest))
    assert (again.status, again.headers["X-Cache"], again.body) == (200, "HIT", layer)
