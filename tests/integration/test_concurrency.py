"""One upstream fetch per blob, however many clients, and each client at its own pace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.faults import FaultyUpstream
from tests.support.images import ImageInfo, build_image
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def big(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> ImageInfo:
    """A 48 MiB layer: larger than socket buffers, so a slow reader really lags behind, and
    larger than any buffering regcache may do, so memory use shows if it held a blob."""
    layout = tmp_path_factory.mktemp("big-layout")
    image = build_image(layout, "big", seed=21, layer_sizes=[48 * MIB, 3 * MIB])
    skopeo.push(layout, "big", f"{upstream.host}/library/big:1.0")
    return image


@pytest.fixture
def proxy(faulty: FaultyUpstream, regcache_factory: RegcacheFactory) -> RegcacheProcess:
    return regcache_factory(
        {"upstreams": [{"name": "docker.io", "url": faulty.url, "read_timeout": 2}]}
    )


def blob_bytes(image: ImageInfo, digest: str) -> bytes:
    return (image.layout_dir / "blobs/sha256" / digest[7:]).read_bytes()


def blob_url(proxy: RegcacheProcess, digest: str) -> str:
    return f"{proxy.url}/v2/library/big/blobs/{digest}"


async def fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.read()


def upstream_gets(faulty: FaultyUpstream, digest: str) -> int:
    return faulty.count("GET", rf"/v2/library/big/blobs/{digest}")


async def test_sixteen_clients_on_a_cold_blob_make_one_upstream_fetch(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[0]
    # Going silent for a moment after the first bytes makes all sixteen arrive mid-download.
    faulty.faults.stall_blobs[digest] = (MIB, 1.0, 1)
    async with aiohttp.ClientSession() as session:
        bodies = await asyncio.gather(*(fetch(session, blob_url(proxy, digest)) for _ in range(16)))
    expected = blob_bytes(big, digest)
    assert all(body == expected for body in bodies)
    assert upstream_gets(faulty, digest) == 1
    joins = proxy.metric("regcache_dedup_joins_total", kind="blob")
    hits = proxy.metric("regcache_cache_requests_total", kind="blob", result="hit")
    assert joins + hits == 15


async def test_slow_client_does_not_hold_back_the_download_or_others(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[0]
    expected = blob_bytes(big, digest)
    async with aiohttp.ClientSession() as session:
        async with session.get(blob_url(proxy, digest)) as slow:
            head = await slow.content.readexactly(64 * 1024)
            assert await fetch(session, blob_url(proxy, digest)) == expected
            # The slow reader has taken 64 KiB of 48 MiB, yet the download finished.
            await asyncio.to_thread(
                wait_until, lambda: proxy.metric("regcache_inflight_downloads") == 0, "download"
            )
            assert proxy.metric("regcache_cache_size_bytes") >= len(expected)
            rest = await slow.read()
    assert head + rest == expected
    assert upstream_gets(faulty, digest) == 1


async def test_client_that_disconnects_cancels_nothing(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[0]
    faulty.faults.stall_blobs[digest] = (MIB, 1.0, 1)
    async with aiohttp.ClientSession() as quitter:
        async with quitter.get(blob_url(proxy, digest)) as response:
            await response.content.readexactly(1024)
            response.close()  # drops the connection mid-blob
    async with aiohttp.ClientSession() as session:
        assert await fetch(session, blob_url(proxy, digest)) == blob_bytes(big, digest)
    assert upstream_gets(faulty, digest) == 1


async def test_dropped_upstream_connection_is_resumed_with_range(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[0]
    faulty.faults.truncate_blobs[digest] = (5 * MIB, 1)
    async with aiohttp.ClientSession() as session:
        bodies = await asyncio.gather(*(fetch(session, blob_url(proxy, digest)) for _ in range(4)))
    assert all(body == blob_bytes(big, digest) for body in bodies)
    ranged = [s.headers["Range"] for s in faulty.seen if "Range" in s.headers]
    assert len(ranged) == 1
    # It continues from what it had written, at most what the upstream sent before the cut.
    resumed_at = int(ranged[0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 5 * MIB
    assert proxy.metric("regcache_upstream_resumes_total") == 1
    assert upstream_gets(faulty, digest) == 2  # the first try, and its continuation


async def test_upstream_that_stalls_once_is_resumed(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[1]
    faulty.faults.stall_blobs[digest] = (MIB, 5.0, 1)  # past the 2 s read timeout
    async with aiohttp.ClientSession() as session:
        assert await fetch(session, blob_url(proxy, digest)) == blob_bytes(big, digest)
    assert proxy.metric("regcache_upstream_resumes_total") == 1


async def test_upstream_that_keeps_stalling_fails_every_client_cleanly(
    faulty: FaultyUpstream, proxy: RegcacheProcess, big: ImageInfo
) -> None:
    digest = big.layer_digests[1]
    # Each attempt gains 256 KiB before going silent: four attempts cannot finish 3 MiB.
    faulty.faults.stall_blobs[digest] = (256 * 1024, 5.0, 100)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(fetch(session, blob_url(proxy, digest)) for _ in range(3)), return_exceptions=True
        )
    # Closed short of the declared length: never a complete-looking wrong body.
    assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
    assert not list((proxy.cache_dir / "blobs").rglob(digest[7:]))
    assert proxy.metric("regcache_inflight_downloads") == 0

    faulty.faults.stall_blobs.clear()
    async with aiohttp.ClientSession() as session:
        assert await fetch(session, blob_url(proxy, digest)) == blob_bytes(big, digest)


async def test_sixteen_concurrent_skopeo_pulls_fetch_each_blob_once(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path, big: ImageInfo
) -> None:
    proxy = regcache_factory({"upstreams": [upstream.entry("docker.io")]})
    mark = upstream.registry.mark()
    pulls = [skopeo.pull_async(proxy.ref("big", "1.0"), tmp_path / f"out{i}") for i in range(16)]
    pulled = await asyncio.gather(*pulls)
    assert all(p.manifest == big.manifest for p in pulled)
    for digest in (big.config_digest, *big.layer_digests):
        assert upstream.registry.blob_gets(digest, since=mark) == 1
    assert upstream.registry.count("GET", r"/v2/library/big/manifests/.+", mark) == 1


def memory(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


async def test_memory_stays_flat_with_blob_size_and_client_count(
    upstream: Upstream, regcache_factory: RegcacheFactory, big: ImageInfo
) -> None:
    proxy = regcache_factory({"upstreams": [upstream.entry("docker.io")]})
    assert proxy.pid is not None
    async with aiohttp.ClientSession() as session:
        # Warm the code paths (imports, buffers) on a small blob first.
        await fetch(session, blob_url(proxy, big.layer_digests[1]))
        before = memory(proxy.pid, "VmRSS")
        digest = big.layer_digests[0]
        cold = await asyncio.gather(*(fetch(session, blob_url(proxy, digest)) for _ in range(16)))
        warm = await asyncio.gather(*(fetch(session, blob_url(proxy, digest)) for _ in range(16)))
    assert all(len(body) == len(blob_bytes(big, digest)) for body in cold + warm)
    growth = memory(proxy.pid, "VmHWM") - before
    print(f"peak RSS growth serving 48 MiB to 16 clients cold and warm: {growth / MIB:.1f} MiB")
    # Buffering the blob once would cost 48 MiB, once per client 768 MiB.
    assert growth < 48 * MIB
