"""The small work replicas share through Redis: two (or three) in-process regcaches on one
Redis, in front of one fake upstream that counts what it is asked.

- a tag pulled at once on every replica is fetched from the upstream once; a revalidation
  due on every replica is one HEAD; a moved tag's new manifest is one GET;
- each scheduled prefetch run of an image is done by one replica;
- failed logins count across the fleet: a password guesser alternating replicas is refused
  after as many guesses as on one;
- with Redis stopped, pulls are still answered and logins still limited, per replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

import proxy.cache.prefetch
from proxy.auth.sharedlimit import SharedFailureLimiter
from proxy.config.prefetch import PrefetchRule
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.fast.test_manage import pull
from tests.support.clientauth import USERS, assert_oci_error, auth_settings, basic
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import Answer, InProcessRegcache
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer

MANIFEST = "/v2/library/app/manifests/1.0"
ACCEPT = {"Accept": OCI_MANIFEST}
# Long enough for every replica's request to arrive while the first one's is under way.
SLOW = 0.3


async def fleet(make_proxy: ProxyFactory, count: int, **settings: Any) -> list[InProcessRegcache]:
    return [await make_proxy(replica_name=f"r{n}", **settings) for n in range(count)]


async def lease_waits(replicas: list[InProcessRegcache]) -> float:
    return sum([await r.metric("regcache_lease_waits_total", kind="manifest") for r in replicas])


def assert_all(answers: list[Answer], body: bytes) -> None:
    assert {(answer.status, answer.body) for answer in answers} == {(200, body)}


def slow_manifests(registry: FakeRegistry, method: str | None = None) -> None:
    registry.faults.append(Fault(path="/v2/library/app/manifests/.*", method=method, delay=SLOW))


async def test_a_tag_pulled_at_once_on_two_replicas_is_fetched_once(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    redis_settings: dict[str, Any],
) -> None:
    replicas = await fleet(make_proxy, 2, **redis_settings)
    slow_manifests(registry)
    answers = await asyncio.gather(*(r.get(MANIFEST, ACCEPT) for r in replicas * 3))
    assert_all(answers, image.manifest)
    assert (registry.count("GET", MANIFEST), registry.count("HEAD", MANIFEST)) == (1, 0)
    # The replica that waited found the manifest in the index: nothing left to ask.
    assert await lease_waits(replicas) == 1


async def test_a_revalidation_due_on_two_replicas_is_one_head(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    redis_settings: dict[str, Any],
) -> None:
    # A TTL of 0: every request is due to revalidate; only concurrent ones share a HEAD.
    replicas = await fleet(make_proxy, 2, tag_ttl=0, **redis_settings)
    assert (await replicas[0].get(MANIFEST, ACCEPT)).body == image.manifest
    slow_manifests(registry, "HEAD")
    answers = await asyncio.gather(*(r.get(MANIFEST, ACCEPT) for r in replicas * 3))
    assert_all(answers, image.manifest)
    assert (registry.count("GET", MANIFEST), registry.count("HEAD", MANIFEST)) == (1, 1)
    assert await lease_waits(replicas) == 1
    # Not shared with an answer older than the request: a later request asks again.
    assert (await replicas[1].get(MANIFEST, ACCEPT)).body == image.manifest
    assert registry.count("HEAD", MANIFEST) == 2


async def test_a_moved_tag_is_one_head_and_one_get_across_replicas(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    redis_settings: dict[str, Any],
) -> None:
    replicas = await fleet(make_proxy, 3, tag_ttl=0, **redis_settings)
    await pull(replicas[0], image)
    moved = registry.push_image("library/app", "1.0", layer_sizes=(8 * KIB,), seed=1)
    slow_manifests(registry)
    answers = await asyncio.gather(*(r.get(MANIFEST, ACCEPT) for r in replicas * 2))
    assert_all(answers, moved.manifest)
    assert registry.count("HEAD", MANIFEST) == 1
    assert registry.count("GET", f"/v2/library/app/manifests/{moved.digest}") == 1
    # Two replicas waited twice each: for the revalidation, then for the new manifest.
    assert await lease_waits(replicas) == 4


async def test_each_prefetch_run_is_done_by_one_replica(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    redis_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy.cache.prefetch, "FIRST_RUN_AFTER", 0.05)
    image = registry.push_image("library/app", "stable", layer_sizes=(64 * KIB, 8 * KIB))
    # One run in the test's time: the first, which every replica's schedule fires at once.
    schedule = (PrefetchRule(("docker.io/app:stable",), 3600.0, ()),)
    replicas = await fleet(make_proxy, 2, prefetch=schedule, **redis_settings)
    assert sorted([await first_result(r) for r in replicas]) == ["elsewhere", "ok"]
    # A replica started later in the interval finds the run done.
    replicas += await fleet(make_proxy, 1, prefetch=schedule, **redis_settings)
    assert await first_result(replicas[2]) == "elsewhere"
    runs = {
        result: sum(
            [await r.metric("regcache_prefetch_runs_total", result=result) for r in replicas]
        )
        for result in ("ok", "elsewhere", "failed")
    }
    assert runs == {"ok": 1, "elsewhere": 2, "failed": 0}
    assert registry.count("GET", "/v2/library/app/manifests/stable") == 1
    for digest in image.layer_digests:
        assert registry.count("GET", blob_path(digest)) == 1


async def test_with_redis_stopped_each_replica_runs_the_prefetch_itself(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy.cache.prefetch, "FIRST_RUN_AFTER", 0.05)
    registry.push_image("library/app", "stable", layer_sizes=(8 * KIB,))
    schedule = (PrefetchRule(("docker.io/app:stable",), 3600.0, ()),)
    with RedisServer(work_dir=tmp_path / "redis") as server:
        settings = {"index_backend": "redis", "index_redis_url": server.url}
        server.stop()
        replicas = await fleet(make_proxy, 2, prefetch=schedule, **settings)
        # Better twice than never: a schedule must not stop with Redis.
        assert [await first_result(r) for r in replicas] == ["ok", "ok"]


async def first_result(regcache: InProcessRegcache) -> str:
    """The prefetch result of the schedule's first image, once it has one (5 s at most)."""
    for _ in range(250):
        answer = await regcache.get("/status.json")
        [state] = answer.json()["prefetch"]
        if state["result"] is not None:
            return str(state["result"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no prefetch result on {regcache.url}")


@pytest.mark.parametrize("count", [1, 2, 3])
async def test_a_password_guesser_alternating_replicas_is_limited_as_on_one(
    make_proxy: ProxyFactory,
    image: FakeImage,
    redis_settings: dict[str, Any],
    tmp_path: Path,
    count: int,
) -> None:
    settings = auth_settings(tmp_path, auth_anonymous=False)
    replicas = await fleet(make_proxy, count, **settings, **redis_settings)
    for guess in range(10):
        wrong = basic("alice", f"guess-{guess}")
        answer = await replicas[guess % count].get(MANIFEST, wrong)
        assert_oci_error(answer, 401, "UNAUTHORIZED")
    for regcache in replicas:
        limited = await regcache.get(MANIFEST, basic("alice", "guess-10"))
        assert_oci_error(limited, 429, "TOOMANYREQUESTS")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # Not even the right password, so that guessing learns nothing more anywhere.
        right = await regcache.get(MANIFEST, basic("alice", USERS["alice"]))
        assert_oci_error(right, 429, "TOOMANYREQUESTS")


async def test_with_redis_stopped_pulls_work_and_logins_are_limited_per_replica(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    tmp_path: Path,
) -> None:
    # A Redis of its own, to stop without disturbing other tests.
    with RedisServer(work_dir=tmp_path / "redis") as server:
        settings = {"index_backend": "redis", "index_redis_url": server.url}
        replicas = await fleet(make_proxy, 2, **settings, **auth_settings(tmp_path))
        for regcache in replicas:
            await pull(regcache, image)
        server.stop()
        slow_manifests(registry)
        await asyncio.gather(*(pull(regcache, image) for regcache in replicas))
        # Unshared while Redis is out: each replica asked the upstream itself.
        assert registry.count("GET", MANIFEST) == 3
        first, second = replicas
        for guess in range(10):
            assert_oci_error(
                await first.get(MANIFEST, basic("alice", f"{guess}")), 401, "UNAUTHORIZED"
            )
        limited = await first.get(MANIFEST, basic("alice", "10"))
        assert_oci_error(limited, 429, "TOOMANYREQUESTS")
        # The other replica has its own count meanwhile, not none: nobody is locked out.
        assert_oci_error(await second.get(MANIFEST, basic("alice", "0")), 401, "UNAUTHORIZED")
        assert (await second.get(MANIFEST, basic("alice", USERS["alice"]))).status == 200


@pytest.fixture
async def shared_redis(redis_settings: dict[str, Any]) -> AsyncIterator[tuple[Redis, str]]:
    """A connection to the session's Redis, and this test's key prefix."""
    client = Redis.from_url(redis_settings["index_redis_url"])
    yield client, redis_settings["index_redis_prefix"]
    await client.aclose()


async def test_the_shared_limiter_keeps_one_window_per_address_and_no_more(
    shared_redis: tuple[Redis, str],
) -> None:
    client, prefix = shared_redis
    # Two replicas' limiters on one Redis.
    replicas = [SharedFailureLimiter(client, prefix, limit=3, window=0.5) for _ in range(2)]
    for guess in range(5):
        await replicas[guess % 2].failed("10.0.0.1")
    for limiter in replicas:
        assert await limiter.retry_after("10.0.0.1") == 1
        assert await limiter.retry_after("10.0.0.2") is None
    key = f"{prefix}login-failures:10.0.0.1"
    # The last ``limit`` failures only, kept no longer than the window.
    assert await client.zcard(key) == 3
    assert 0 < await client.pttl(key) <= 500
    await asyncio.sleep(0.6)
    assert [await limiter.retry_after("10.0.0.1") for limiter in replicas] == [None, None]


async def test_the_shared_limiter_out_of_reach_counts_in_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limiter = SharedFailureLimiter(client, "nowhere:", limit=3)
    for _ in range(3):
        assert await limiter.retry_after("10.0.0.1") is None
        await limiter.failed("10.0.0.1")
    assert await limiter.retry_after("10.0.0.1") == 60
    assert await limiter.retry_after("10.0.0.2") is None
    assert caplog.text.count("Redis out of reach") == 1
    await client.aclose()
