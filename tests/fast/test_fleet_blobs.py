"""Replicas of one fleet fetch each blob once between them (issue 12).

In-process replicas share the session's Redis (under a prefix of the test's own) and a bucket
of the session's Ceph gateway, each on its own cache directory and port, advertising its own
address. The replica that gets a blob's lease downloads it; the others stream it from that
owner's peer endpoint; when the owner dies mid-blob (a real ``regcache serve`` SIGKILLed), a
follower takes the lease over and resumes from the upstream at the byte it reached.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import jwt
import pytest
from redis.asyncio import Redis

import proxy.cache.fleetsource
from proxy.config.authfiles import TokenKey
from tests.fast.conftest import KIB, blob_path, stall_once
from tests.support.clientauth import auth_settings, basic, bearer
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache, make_config
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer
from tests.support.regcache import RegcacheProcess

MIB = 1024 * 1024
SECRET = b"replicas-of-one-fleet-share-this-key-0123456789"
StartReplica = Callable[..., Awaitable[InProcessRegcache]]
log = logging.getLogger(__name__)


@pytest.fixture
def replica_key(tmp_path: Path) -> TokenKey:
    path = tmp_path / "replica.key"
    path.write_bytes(SECRET)
    return TokenKey(path, SECRET)


@pytest.fixture
def fleet_settings(
    redis_server: RedisServer, s3_settings: dict[str, Any], replica_key: TokenKey
) -> dict[str, Any]:
    return {
        **s3_settings,
        "index_backend": "redis",
        "index_redis_url": redis_server.url,
        "index_redis_prefix": f"fleet-{uuid.uuid4().hex}:",
        "replica_secret_file": replica_key,
    }


@pytest.fixture
async def start_replica(
    registry: FakeRegistry, tmp_path: Path, fleet_settings: dict[str, Any]
) -> AsyncIterator[StartReplica]:
    """``await start_replica(name, **settings)``: a replica that advertises its own address
    (unless ``advertise=False``), with ``settings`` over the fleet's."""
    started: list[InProcessRegcache] = []

    async def start(name: str, advertise: bool = True, **settings: Any) -> InProcessRegcache:
        port = free_port()
        url = f"http://127.0.0.1:{port}" if advertise else None
        merged = {**fleet_settings, "replica_name": name, "replica_advertise_url": url}
        merged.update(settings)
        replica = InProcessRegcache(make_config(tmp_path / name, registry.url, **merged), port=port)
        started.append(replica)
        await replica.start()
        return replica

    yield start
    for replica in started:
        await replica.stop()


@pytest.fixture
def big(registry: FakeRegistry) -> FakeImage:
    """One 4 MiB layer: many reads, and room to die in the middle of it."""
    return registry.push_image("library/app", "big", layer_sizes=(4 * MIB,))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def streamed(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, int]:
    """A GET's status, the sha256 of its body as it streamed in, and its length; a body that
    ended short (its connection closed) is hashed as far as it came."""
    hashed, length = hashlib.sha256(), 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers) as response:
            try:
                async for chunk in response.content.iter_any():
                    hashed.update(chunk)
                    length += len(chunk)
            except aiohttp.ClientPayloadError:
                pass
            return response.status, hashed.hexdigest(), length


async def total(replicas: list[InProcessRegcache], name: str, **labels: str) -> float:
    found = 0.0
    for replica in replicas:
        found += await replica.metric(name, **labels)
    return found


def full_gets(registry: FakeRegistry, digest: str) -> int:
    path = blob_path(digest)
    return sum(
        1
        for s in registry.seen
        if s.method == "GET" and s.path == path and "Range" not in s.headers
    )


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
    await until(lambda: _now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
    second = asyncio.create_task(streamed(follower.url + blob_path(digest)))
    # The follower streams what the owner has while the owner's download is still under way.
    await until(lambda: _received([follower], MIB), "the follower to stream from the owner")
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
    await until(lambda: _now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
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
    await until(lambda: _now(registry.count("GET", blob_path(digest)) == 1), "the owner's GET")
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


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        await asyncio.sleep(0.02)


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
        await until(lambda: _now(registry.count("GET", path) == 1), "the owner's GET")
        asked = [
            streamed(followers[0].url + path),
            streamed(followers[1].url + path),
            streamed(followers[1].url + path, {"Range": "bytes=3000000-"}),
        ]
        answers = asyncio.gather(*asked)
        # Both followers have every byte the owner got: it held back none of them.
        await until(lambda: _received(followers, reached), "the followers to catch up")
        killed = time.monotonic()
        await asyncio.to_thread(owner.kill)
        await until(lambda: _now(len(registry.ranges()) > 0), "the upstream to be asked again")
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


async def _now(value: bool) -> bool:
    return value


async def _received(replicas: list[InProcessRegcache], count: int) -> bool:
    """Whether every replica received ``count`` bytes from its peers."""
    for replica in replicas:
        if await replica.metric("regcache_peer_stream_bytes", direction="received") < count:
            return False
    return True


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


def peer_path(digest: str) -> str:
    return f"/_regcache/peer/blobs/{digest}"


def signed(digest: str, key: bytes = SECRET, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": "r9", "aud": "regcache-peer", "sub": digest, "iat": now, "exp": now + 30}
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


def unsigned(digest: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": "regcache-peer", "sub": digest, "iat": now, "exp": now + 30}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def refusals(digest: str, client_token: str) -> dict[str, dict[str, str]]:
    """Authorization headers that must not open the peer endpoint, by name."""
    now = int(time.time())
    return {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "garbage": bearer("not.a.jwt"),
        "basic": {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()},
        "wrong key": bearer(signed(digest, key=b"another-key-of-forty-bytes-0123456789ab")),
        "expired": bearer(signed(digest, iat=now - 120, exp=now - 60)),
        "wrong audience": bearer(signed(digest, aud="regcache")),
        "no audience": bearer(signed(digest, aud=None)),
        "no expiry": bearer(signed(digest, exp=None)),
        "lives too long": bearer(signed(digest, exp=now + 3600)),
        "another blob": bearer(signed("sha256:" + "0" * 64)),
        "alg none": bearer(unsigned(digest)),
        "a client's token": bearer(client_token),
        "huge": bearer("a" * 4000),
    }


async def test_the_peer_endpoint_wants_a_valid_peer_token_and_nothing_else_opens_it(
    start_replica: StartReplica,
    image: FakeImage,
    registry: FakeRegistry,
    tmp_path: Path,
    replica_key: TokenKey,
) -> None:
    # Logins on, and the replica key doubling as the client token key: a client's token,
    # valid for /v2, is still no peer's.
    settings = auth_settings(tmp_path, auth_anonymous=False, auth_token_key_file=replica_key)
    replica = await start_replica("r0", **settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    assert (await replica.get(blob_path(digest), basic("alice", "alice-pw"))).status == 200
    issued = await replica.get(
        "/token?scope=repository:library/app:pull", basic("alice", "alice-pw")
    )
    client_token = issued.json()["token"]
    assert (await replica.get(blob_path(digest), bearer(client_token))).status == 200
    answers = {}
    for name, headers in refusals(digest, client_token).items():
        for method in ("GET", "HEAD"):
            answers[name, method] = await replica.request(method, peer_path(digest), headers)
    assert {key: answer.status for key, answer in answers.items()} == dict.fromkeys(answers, 401)
    # One answer for every refusal: nothing tells an attacker which check failed.
    bodies = {answer.body for (_, method), answer in answers.items() if method == "GET"}
    assert [json.loads(body) for body in bodies] == [
        {"errors": [{"code": "UNAUTHORIZED", "message": "peer authentication required"}]}
    ]

    token = bearer(signed(digest))
    whole = await replica.get(peer_path(digest), token)
    assert (whole.status, whole.body, whole.headers["X-Regcache-Blob-Size"]) == (
        200,
        layer,
        str(len(layer)),
    )
    ranged = await replica.get(peer_path(digest), {**token, "Range": "bytes=1000-"})
    assert (ranged.status, ranged.body) == (206, layer[1000:])
    head = await replica.head(peer_path(digest), token)
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(layer)))
    unknown = "sha256:" + "1" * 64
    missing = await replica.get(peer_path(unknown), bearer(signed(unknown)))
    assert (missing.status, missing.error_code) == (404, "BLOB_UNKNOWN")
    assert (
        await replica.metric("regcache_peer_stream_bytes", direction="sent")
        == len(layer) * 2 - 1000
    )


@pytest.mark.parametrize(
    "named",
    [
        "sha256:../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "sha256:%2E%2E%2Fblobs",
        "md5:" + "0" * 32,
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "%00",
    ],
)
async def test_the_peer_endpoint_answers_a_bad_digest_with_an_oci_error(
    start_replica: StartReplica, named: str
) -> None:
    replica = await start_replica("r0")
    # Signed for the digest as named, so that the refusal is the digest's, not the token's.
    answer = await replica.get(peer_path(named), bearer(signed(unquote(named))))
    assert answer.status in (400, 404)
    assert answer.json()["errors"][0]["code"] in ("DIGEST_INVALID", "UNSUPPORTED", "BLOB_UNKNOWN")
    assert b"Traceback" not in answer.body
