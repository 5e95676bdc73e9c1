"""The proxy's own trouble: SIGKILL mid-download, SIGTERM mid-response, a size bound."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.faults import FaultyUpstream
from tests.support.images import build_image
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until

MIB = 1024 * 1024


def cached_blobs(proxy: RegcacheProcess) -> list[Path]:
    return [p for p in (proxy.cache_dir / "blobs").rglob("*") if p.is_file()]


def assert_every_cached_blob_verifies(proxy: RegcacheProcess) -> None:
    for path in cached_blobs(proxy):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path


def temp_files(proxy: RegcacheProcess) -> list[Path]:
    return list((proxy.cache_dir / "tmp").iterdir())


async def test_sigkill_mid_download_leaves_nothing_unverified(
    faulty: FaultyUpstream, regcache_factory: RegcacheFactory, upstream: Upstream
) -> None:
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": faulty.url}]})
    image = upstream.images.small
    digest = image.layer_digests[2]
    faulty.faults.stall_blobs[digest] = (MIB, 30.0, 1)
    url = f"{proxy.url}/v2/library/small/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            await response.content.readexactly(64 * 1024)
            assert temp_files(proxy), "the download should be writing a temporary file"
            proxy.kill()
    proxy.start()
    assert temp_files(proxy) == []
    assert cached_blobs(proxy) == []
    faulty.faults.stall_blobs.clear()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.read()
    assert hashlib.sha256(body).hexdigest() == digest[7:]
    assert_every_cached_blob_verifies(proxy)


async def test_sigterm_lets_responses_finish_and_leaves_no_temp_files(
    faulty: FaultyUpstream, regcache_factory: RegcacheFactory, upstream: Upstream
) -> None:
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": faulty.url}]})
    digest = upstream.images.small.layer_digests[2]
    faulty.faults.stall_blobs[digest] = (MIB, 2.0, 1)
    url = f"{proxy.url}/v2/library/small/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            head = await response.content.readexactly(64 * 1024)
            stopping = asyncio.create_task(asyncio.to_thread(proxy.stop, 30.0))
            body = head + await response.read()
        exit_code = await stopping
    assert exit_code == 0
    assert hashlib.sha256(body).hexdigest() == digest[7:]
    assert temp_files(proxy) == []
    assert_every_cached_blob_verifies(proxy)


def test_cache_stays_within_max_size(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    first = build_image(layout, "one", seed=41, layer_sizes=[2 * MIB])
    second = build_image(layout, "two", seed=42, layer_sizes=[2 * MIB])
    for tag in ("one", "two"):
        skopeo.push(layout, tag, f"{upstream.host}/library/bounded:{tag}")
    proxy = regcache_factory(
        {"cache": {"max_size": "3MiB"}, "upstreams": [upstream.entry("docker.io")]}
    )
    skopeo.pull(proxy.ref("bounded", "one"), tmp_path / "one")
    skopeo.pull(proxy.ref("bounded", "two"), tmp_path / "two")
    wait_until(lambda: proxy.metric("regcache_evictions_total") > 0, "an eviction")
    assert sum(p.stat().st_size for p in cached_blobs(proxy)) <= 3 * MIB
    assert not any(p.name == first.layer_digests[0][7:] for p in cached_blobs(proxy))
    assert any(p.name == second.layer_digests[0][7:] for p in cached_blobs(proxy))
    assert proxy.metric("regcache_evicted_bytes_total") >= 2 * MIB

    # What was evicted is fetched again, and the bound still holds after a restart.
    mark = upstream.registry.mark()
    skopeo.pull(proxy.ref("bounded", "one"), tmp_path / "again")
    assert upstream.registry.blob_gets(first.layer_digests[0], since=mark) == 1
    proxy.restart()
    assert sum(p.stat().st_size for p in cached_blobs(proxy)) <= 3 * MIB


async def test_repeated_sigkill_at_different_moments_never_leaves_a_bad_blob(
    upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    """Kills land mid-download, around commits and between requests; whatever was on disk
    when each one landed, the cache must hold only whole, verified blobs afterwards."""
    proxy = regcache_factory(
        {"cache": {"max_size": "2MiB"}, "upstreams": [upstream.entry("docker.io")]}
    )
    image = upstream.images.small
    urls = [f"{proxy.url}/v2/library/small/blobs/{d}" for d in image.layer_digests]
    for round_number, kill_after in enumerate((16 * 1024, 256 * 1024, 900 * 1024, 1900 * 1024)):
        async with aiohttp.ClientSession() as session:
            responses = [await session.get(url) for url in urls]
            try:
                for response in responses:
                    await response.content.read(kill_after)
                proxy.kill()
            finally:
                for response in responses:
                    response.close()
        proxy.start()
        assert temp_files(proxy) == [], f"round {round_number}"
        assert_every_cached_blob_verifies(proxy)
    async with aiohttp.ClientSession() as session:
        for url, digest in zip(urls, image.layer_digests, strict=True):
            async with session.get(url) as response:
                assert hashlib.sha256(await response.read()).hexdigest() == digest[7:]
