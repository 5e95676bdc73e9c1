"""Scheduled prefetch: the fake registry moves a tag, and the cache follows within the
interval, with nothing asked by any client; then it serves the new image offline."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.config.prefetch import PrefetchRule
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import OCI_INDEX, OCI_MANIFEST, FakeImage, FakeRegistry, digest_of
from tests.support.inproxy import InProcessRegcache

EVERY = 0.2


def every(*images: str, platforms: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"prefetch": (PrefetchRule(images, EVERY, platforms),)}


async def prefetch_status(regcache: InProcessRegcache) -> list[dict[str, Any]]:
    answer = await regcache.get("/status.json")
    assert answer.status == 200
    found: list[dict[str, Any]] = answer.json()["prefetch"]
    return found


async def until(regcache: InProcessRegcache, digest: str, result: str = "ok") -> dict[str, Any]:
    """The first image's status once its last run gave ``digest`` (5 s at most)."""
    for _ in range(250):
        [state] = (await prefetch_status(regcache))[:1]
        if state["result"] == result and state["digest"] == digest:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"prefetch stayed at {state}")


def cached(regcache: InProcessRegcache, image: FakeImage) -> bool:
    names = {path.name for path in regcache.files("blobs")}
    return all(digest_of(data).removeprefix("sha256:") in names for data in image.layers)


async def test_the_cache_follows_a_moved_tag_and_serves_it_offline(
    make_proxy: ProxyFactory, registry: FakeRegistry
) -> None:
    old = registry.push_image("library/app", "stable", layer_sizes=(64 * KIB,))
    regcache = await make_proxy(**every("docker.io/app:stable"))
    # A client that pulled the tag with an Accept list of its own, before it moved.
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    assert (await regcache.get("/v2/library/app/manifests/stable", accept)).body == old.manifest
    state = await until(regcache, old.digest)
    assert state["image"] == "docker.io/app:stable"
    assert state["every_seconds"] == EVERY
    assert cached(regcache, old)
    assert await regcache.metric("regcache_prefetch_bytes_total") == len(old.config) + len(
        old.layers[0]
    )
    new = registry.push_image("library/app", "stable", layer_sizes=(32 * KIB, 8 * KIB), seed=1)
    await until(regcache, new.digest)
    assert cached(regcache, new)
    assert await regcache.metric("regcache_prefetch_runs_total", result="ok") >= 2
    # The client's GET and the first run's; later runs ask with a HEAD, which Docker Hub
    # does not count against its pull limit.
    assert registry.count("GET", "/v2/library/app/manifests/stable") == 2
    assert registry.count("HEAD", "/v2/library/app/manifests/stable") >= 1
    page = (await regcache.get("/")).body.decode()
    assert "Scheduled prefetch" in page
    await registry.stop()
    await regcache.restart(offline=True)
    for headers in (accept, {"Accept": OCI_MANIFEST}):
        answer = await regcache.get("/v2/library/app/manifests/stable", headers)
        assert (answer.status, answer.body) == (200, new.manifest)
    for data in new.layers:
        answer = await regcache.get(blob_path(digest_of(data)))
        assert (answer.status, answer.body) == (200, data)


async def test_only_the_chosen_platforms_of_an_index_are_fetched(
    make_proxy: ProxyFactory, registry: FakeRegistry
) -> None:
    digest, images = registry.push_index("library/multi", "latest", ["linux/amd64", "linux/arm64"])
    regcache = await make_proxy(**every("docker.io/multi", platforms=("linux/arm64",)))
    await until(regcache, digest)
    assert cached(regcache, images["linux/arm64"])
    assert not cached(regcache, images["linux/amd64"])


async def test_a_failed_run_is_counted_and_shown_and_the_schedule_goes_on(
    make_proxy: ProxyFactory, registry: FakeRegistry
) -> None:
    regcache = await make_proxy(**every("docker.io/library/gone:1"))
    state = await until(regcache, None, result="failed")  # type: ignore[arg-type]
    assert state["error"]
    await regcache.settled("regcache_prefetch_runs_total", 2, result="failed")
    image = registry.push_image("library/gone", "1")
    await until(regcache, image.digest)


async def test_an_offline_server_does_not_run_the_schedule(
    make_proxy: ProxyFactory, registry: FakeRegistry
) -> None:
    registry.push_image("library/app", "stable")
    regcache = await make_proxy(offline=True, **every("docker.io/app:stable"))
    await asyncio.sleep(3 * EVERY)
    [state] = await prefetch_status(regcache)
    assert (state["last_run"], state["result"]) == (None, None)
    assert not registry.seen
