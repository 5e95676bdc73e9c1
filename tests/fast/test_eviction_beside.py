"""A bounded server's eviction and the commands run beside it on its cache directory: what
warm and import store is evicted to the bound, and what rm removed is not counted evicted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.cli import build_parser
from proxy.commands.export import export
from proxy.commands.importbundle import import_bundle
from proxy.commands.removal import remove_images
from proxy.commands.warm import WarmOptions, plan_image, warm_images
from proxy.routing import Router
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

IMAGE = "docker.io/library/app:1.0"
BOUND = 350 * KIB  # the image's layers are 64 and 300 KiB: one of them must go


def bytes_on_disk(regcache: InProcessRegcache) -> int:
    return sum(path.stat().st_size for path in regcache.files("blobs"))


async def evicted_to_the_bound(regcache: InProcessRegcache) -> None:
    """Wait (15 s at most: a fleet evictor checks claims twice, on a loaded machine) for the
    pass to end within the bound with the server counting what the disk holds. Both are
    looked at until they agree: a pass deletes its victims one by one, so the disk may shrink
    again between the two reads."""
    size = -1
    for _ in range(750):
        on_disk = bytes_on_disk(regcache)
        size = int(await regcache.metric("regcache_cache_size_bytes"))
        if on_disk <= BOUND and size == bytes_on_disk(regcache) == on_disk:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the server did not evict to its bound: counts {size} bytes")
    assert await regcache.metric("regcache_evictions_total", kind="blob") >= 1
    assert size > 0


async def test_what_warm_stores_beside_a_running_server_is_evicted_to_its_bound(
    make_proxy: ProxyFactory, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=BOUND)
    options = WarmOptions(platforms=(), concurrency=4, pin=False, server=None, as_json=True)
    planned = [plan_image(IMAGE, Router(regcache.config), False)]
    assert await warm_images(regcache.config, planned, options) == 0
    await evicted_to_the_bound(regcache)


async def test_what_import_stores_beside_a_running_server_is_evicted_to_its_bound(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, tmp_path: Path
) -> None:
    config = tmp_path / "regcache.yaml"
    config.write_text(f"upstreams:\n  - name: docker.io\n    url: {registry.url}\n")

    def args(*argv: str, cache: Path) -> list[str]:
        return [*argv, "--config", str(config), "--cache-dir", str(cache)]

    bundle = tmp_path / "bundle.tar"
    exporting = args("export", IMAGE, "--fetch", "-o", str(bundle), cache=tmp_path / "far")
    assert await export(build_parser().parse_args(exporting)) == 0
    regcache = await make_proxy(cache_max_size=BOUND, offline=True)
    importing = args("import", str(bundle), cache=regcache.config.cache_dir)
    assert await import_bundle(build_parser().parse_args(importing)) == 0
    await evicted_to_the_bound(regcache)


async def test_what_rm_removed_beside_a_running_server_is_not_counted_evicted(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(cache_max_size=400 * KIB)
    assert (await regcache.get("/v2/library/app/manifests/1.0")).status == 200
    for layer in image.layer_digests:
        assert (await regcache.get(blob_path(layer))).status == 200
    assert await remove_images(regcache.config, [IMAGE], as_json=False) == 0
    # Over the bound only if the server still counted what rm removed.
    extra = registry.add_blob(b"x" * 100 * KIB)
    assert (await regcache.get(blob_path(extra))).status == 200
    await regcache.settled("regcache_cache_size_bytes", 100 * KIB)
    assert await regcache.metric("regcache_evictions_total") == 0
    assert await regcache.metric("regcache_evicted_bytes_total") == 0


async def test_a_blob_gone_when_its_turn_comes_is_not_counted_evicted(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    """Deleted behind the server's back with no word to it, as by hand."""
    regcache = await make_proxy(cache_max_size=400 * KIB)
    assert (await regcache.get(blob_path(image.layer_digests[1]))).status == 200
    (gone,) = regcache.files("blobs")
    gone.unlink()
    extra = registry.add_blob(b"x" * 150 * KIB)
    assert (await regcache.get(blob_path(extra))).status == 200
    await asyncio.sleep(0.2)  # passes enough to have evicted it, had it been there
    assert await regcache.metric("regcache_evicted_bytes_total") == 0
    assert (await regcache.get(blob_path(extra))).status == 200
