"""Replicas of one fleet when a part of it fails (issue 12): when the blob's owner dies mid-blob
(a real ``regcache serve`` SIGKILLed), a follower takes the lease over and resumes from the
upstream at the byte it reached; with Redis stopped, each replica fetches on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from tests.fast.conftest import KIB, MIB, StartReplica, blob_path, stall_once
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.fleetblobs import all_received, full_gets, is_now, sha256, streamed, total, until
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer
from tests.support.regcache import RegcacheProcess

log = logging.getLogger(__name__)


def serve_config(
    name: str, port: int, registry: FakeRegistry, fleet: dict[str, Any], directory: Path
) -> dict[str, Any]:
    """``regcache serve``'s YAML for a replica of the fleet ``fleet`` (start_replica's
    settings), the fake registry as its upstream."""
    key_id, secret = directory / "s3-key-id", directory / "s3-secret"
    key_id.write_text(fleet["storage_s3_access_key_id"])
    secret.write_text(fleet["storage_s3_secret_access_key"])
    return {
        "log_level": "info",
        "default_upstream": "docker.io",
        "upstreams": [{"name": "docker.io", "url": registry.url, "read_timeout": 60}],
        "storage": {
            "backend": "s3",
            "s3": {
                "endpoint": fleet["storage_s3_endpoint"],
                "bucket": fleet["storage_s3_bucket"],
                "region": fleet["storage_s3_region"],
                "prefix": fleet["storage_s3_prefix"],
                "access_key_id_file": str(key_id),
                "secret_access_key_file": str(secret),
            },
        },
        "index": {
            "backend": "redis",
            "redis": {"url": fleet["index_redis_url"], "prefix": fleet["index_redis_prefix"]},
        },
        "replica": {
            "name": name,
            "advertise_url": f"http://127.0.0.1:{port}",
            "secret_file": str(fleet["replica_secret_file"].path),
        },
    }


async def test_when_the_owner_is_killed_mid_blob_a_follower_takes_over_from_the_byte_reached(
    start_replica: StartReplica,
    registry: FakeRegistry,
    big: FakeImage,
    fleet_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    digest, layer = big.layer_digests[0], big.layers[0]
    path = blob_path(digest)
    port = free_port()
    config = serve_config("doomed", port, registry, fleet_settings, tmp_path)
    owner = RegcacheProcess(config, work_dir=tmp_path / "doomed", port=port)
    await asyncio.to_thread(owner.start)
    followers = [await start_replica(f"r{n}") for n in range(2)]
    # The owner's download goes silent after 1.5 MiB, and dies there.
    reached = 3 * MIB // 2
    registry.faults.append(Fault(path=path, method="GET", stall=(reached, 60.0), times=1))
    try:
        doomed = asyncio.create_task(streamed(owner.url + path))
        await until(lambda: is_now(registry.count("GET", path) == 1), "the owner's GET")
        asked = [
            streamed(followers[0].url + path),
            streamed(followers[1].url + path),
            streamed(followers[1].url + path, {"Range": "bytes=3000000-"}),
        ]
        answers = asyncio.gather(*asked)
        # Both followers have every byte the owner got: it held back none of them.
        await until(lambda: all_received(followers, reached), "the followers to catch up")
        killed = time.monotonic()
        await asyncio.to_thread(owner.kill)
        await until(lambda: is_now(len(registry.ranges()) > 0), "the upstream to be asked again")
        resumed = time.monotonic() - killed
        results = await answers
    finally:
        await asyncio.to_thread(owner.close)
    log.warning("takeover: upstream asked again %.2f s after the SIGKILL", resumed)
    print(f"\ntakeover: upstream asked again {resumed:.2f} s after the SIGKILL")
    whole = (200, sha256(layer), len(layer))
    assert results == [whole, whole, (206, sha256(layer[3000000:]), len(layer) - 3000000)]
    assert (await doomed)[2] < len(layer)  # its own client's connection closed short
    assert await total(followers, "regcache_lease_takeovers") == 1
    # Both followed the dead owner as far as it got; the one that did not take over then
    # followed the one that did, from there on.
    received = await total(followers, "regcache_peer_stream_bytes", direction="received")
    assert received == reached + len(layer)
    # One full GET (the owner's), and one resume from the byte the new owner had reached.
    assert full_gets(registry, digest) == 1
    assert registry.ranges() == [f"bytes={reached}-"]
    # The new owner stored it: every replica reads it from the bucket now.
    for follower in followers:
        again = await follower.get(path)
        assert (again.status, again.headers["X-Cache"], again.body) == (200, "HIT", layer)
    assert registry.count("GET", path) == 2


async def test_with_redis_stopped_each_replica_fetches_unshared_and_serves_right_bytes(
    start_replica: StartReplica, registry: FakeRegistry, big: FakeImage, tmp_path: Path
) -> None:
    digest, layer = big.layer_digests[0], big.layers[0]
    # A Redis of its own, to stop without disturbing other tests.
    with RedisServer(work_dir=tmp_path / "redis") as server:
        replicas = [await start_replica(f"r{n}", index_redis_url=server.url) for n in range(2)]
        server.stop()
        registry.faults.append(stall_once(digest, after=256 * KIB, seconds=0.3))
        asked = [
            streamed(replica.url + blob_path(digest), headers)
            for replica in replicas
            for headers in (None, None, {"Range": "bytes=5-"})
        ]
        answers = await asyncio.gather(*asked)
        server.start()
    whole = (200, sha256(layer), len(layer))
    assert answers == [whole, whole, (206, sha256(layer[5:]), len(layer) - 5)] * 2
    # Nobody to share with: one download per replica, none of them followed by another.
    assert full_gets(registry, digest) == 2
    assert await total(replicas, "regcache_peer_stream_bytes") == 0
