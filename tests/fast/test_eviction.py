"""cache.max_size and cache.max_age through the running app: the least recently served goes."""

from __future__ import annotations

import shutil

import pytest

from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache


async def fetch_layers(regcache: InProcessRegcache, image: FakeImage, *which: int) -> None:
    for i in which:
        assert (await regcache.get(blob_path(image.layer_digests[i]))).body == image.layers[i]


def upstream_gets(registry: FakeRegistry, image: FakeImage, i: int) -> int:
    return registry.count("GET", blob_path(image.layer_digests[i]))


async def test_max_size_evicts_the_least_recently_served(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=350 * KIB)
    await fetch_layers(regcache, image, 1, 0)  # 300 KiB, then 64 KiB: one too many
    await regcache.settled("regcache_evictions_total", 1, kind="blob")
    assert await regcache.metric("regcache_evicted_bytes_total") == len(image.layers[1])
    assert await regcache.metric("regcache_cache_size_bytes") == len(image.layers[0])

    await fetch_layers(regcache, image, 0, 1)
    assert upstream_gets(registry, image, 0) == 1
    assert upstream_gets(registry, image, 1) == 2


async def test_serving_keeps_content_warm(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=380 * KIB)
    await fetch_layers(regcache, image, 0, 1, 0)  # 364 KiB; the 64 KiB layer served last
    extra = registry.add_blob(b"x" * 20 * KIB)
    assert (await regcache.get(blob_path(extra))).status == 200
    await regcache.settled("regcache_evictions_total", 1)
    assert await regcache.metric("regcache_evicted_bytes_total") == len(image.layers[1])
    await fetch_layers(regcache, image, 0)
    assert upstream_gets(registry, image, 0) == 1


async def test_max_age_evicts_what_was_not_served_lately(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_age=0.3)
    await fetch_layers(regcache, image, 0)
    await regcache.settled("regcache_evictions_total", 1, kind="blob")
    assert await regcache.metric("regcache_cache_size_bytes") == 0
    await fetch_layers(regcache, image, 0)
    assert upstream_gets(registry, image, 0) == 2


async def test_manifests_count_and_are_evicted_too(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=len(image.layers[1]), tag_ttl=0)
    assert (await regcache.get(f"/v2/library/app/manifests/{image.digest}")).status == 200
    await fetch_layers(regcache, image, 1)
    await regcache.settled("regcache_evictions_total", 1, kind="manifest")
    assert (await regcache.get(f"/v2/library/app/manifests/{image.digest}")).status == 200
    assert registry.count("GET", f"/v2/library/app/manifests/{image.digest}") == 2


@pytest.mark.parametrize("lost_index", [False, True], ids=["with-index", "index-lost"])
async def test_bounds_are_applied_at_start_to_what_is_on_disk(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    lost_index: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    regcache = await make_proxy()
    await fetch_layers(regcache, image, 1, 0)
    await regcache.stop()
    if lost_index:
        # As after a crash between linking a blob and recording it: blobs are adopted.
        shutil.rmtree(regcache.config.cache_dir / "index")
    await regcache.restart(cache_max_size=100 * KIB)
    # In the background: serving does not wait for the first pass, nor for its walk of a
    # cache filled without a bound (so without an order).
    await regcache.settled("regcache_evictions_total", 1, kind="blob")
    assert await regcache.metric("regcache_cache_size_bytes") == len(image.layers[0])
    assert ("adopted 2 cached blobs" in caplog.text) is lost_index
    await fetch_layers(regcache, image, 0)
    assert upstream_gets(registry, image, 0) == 1


async def test_a_blob_being_served_is_not_evicted(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=100 * KIB)
    await fetch_layers(regcache, image, 0)
    big = blob_path(image.layer_digests[1])
    async with regcache.client.get(big) as response:
        # Over the bound while this response is under way: the pin holds it.
        await response.content.readexactly(KIB)
        body = await response.read()
    assert body == image.layers[1][KIB:]
    await regcache.settled("regcache_evictions_total", 1)
    assert await regcache.metric("regcache_evicted_bytes_total") == len(image.layers[0])
