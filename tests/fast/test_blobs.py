"""Blobs: one upstream download however many clients, Range on cached and downloading blobs."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fast.conftest import KIB, ProxyFactory, blob_path, stall_once
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache


async def test_concurrent_clients_on_a_cold_blob_make_one_upstream_get(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest, layer = image.layer_digests[1], image.layers[1]
    registry.faults.append(stall_once(digest))
    answers = await asyncio.gather(*(regcache.get(blob_path(digest)) for _ in range(8)))
    assert all(answer.status == 200 and answer.body == layer for answer in answers)
    assert all(answer.headers["Docker-Content-Digest"] == digest for answer in answers)
    assert registry.count("GET", blob_path(digest)) == 1
    joins = await regcache.metric("regcache_dedup_joins_total", kind="blob")
    hits = await regcache.metric("regcache_cache_requests_total", kind="blob", result="hit")
    assert joins + hits == 7
    assert await regcache.metric("regcache_upstream_bytes_total") == len(layer)
    assert await regcache.metric("regcache_cache_size_bytes") == len(layer)
    served = await regcache.metric("regcache_served_bytes_total")
    assert served == 8 * len(layer)


async def test_cached_blob_is_served_without_the_upstream(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest = image.layer_digests[0]
    assert (await regcache.get(blob_path(digest))).body == image.layers[0]
    await registry.stop()
    again = await regcache.get(blob_path(digest))
    assert again.body == image.layers[0]
    assert again.headers["Content-Type"] == "application/octet-stream"
    assert await regcache.metric("regcache_served_bytes_total", source="cache") == len(
        image.layers[0]
    )


@pytest.fixture(params=["cached", "downloading"])
async def layer(
    request: pytest.FixtureRequest,
    regcache: InProcessRegcache,
    registry: FakeRegistry,
    image: FakeImage,
) -> tuple[str, bytes]:
    """The 300 KiB layer's digest and bytes, either cached or such that the next request
    finds it downloading."""
    digest = image.layer_digests[1]
    if request.param == "cached":
        assert (await regcache.get(blob_path(digest))).status == 200
    else:
        registry.faults.append(stall_once(digest))
    return digest, image.layers[1]


LAYER_SIZE = 300 * KIB  # the image fixture's second layer
# Range header -> [start, end) of the answer.
RANGES = {
    "bytes=1000-1999": (1000, 2000),
    "bytes=100000-": (100000, LAYER_SIZE),
    "bytes=-100": (LAYER_SIZE - 100, LAYER_SIZE),
    "bytes=300000-999999": (300000, LAYER_SIZE),
}


@pytest.mark.parametrize("header", RANGES.keys())
async def test_range_requests_get_206_and_the_right_bytes(
    regcache: InProcessRegcache, layer: tuple[str, bytes], header: str
) -> None:
    digest, data = layer
    answer = await regcache.get(blob_path(digest), {"Range": header})
    start, end = RANGES[header]
    assert answer.status == 206
    assert answer.body == data[start:end]
    assert answer.headers["Content-Range"] == f"bytes {start}-{end - 1}/{LAYER_SIZE}"
    # A range answered mid-download still leaves the whole blob in the cache.
    await regcache.settled("regcache_inflight_downloads", 0)
    assert await regcache.metric("regcache_cache_size_bytes") == len(data)


@pytest.mark.parametrize("header", [f"bytes={LAYER_SIZE}-", "bytes=5-2", "bytes=a-b"])
async def test_unsatisfiable_ranges_get_416_with_an_oci_body(
    regcache: InProcessRegcache, layer: tuple[str, bytes], header: str
) -> None:
    digest, _ = layer
    answer = await regcache.get(blob_path(digest), {"Range": header})
    assert answer.status == 416
    assert answer.error_code == "RANGE_INVALID"
    assert answer.headers["Content-Range"] == f"bytes */{LAYER_SIZE}"


async def test_a_small_cached_blob_answers_ranges_and_conditions_from_memory(
    regcache: InProcessRegcache, image: FakeImage
) -> None:
    """The 64 KiB layer is read whole when opened (fsblobs.SMALL_BLOB): answered in one
    write, with the same headers as a blob sent from its file."""
    digest, data = image.layer_digests[0], image.layers[0]
    assert (await regcache.get(blob_path(digest))).body == data
    whole = await regcache.get(blob_path(digest))
    assert (whole.status, whole.body, whole.headers["X-Cache"]) == (200, data, "HIT")
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = await regcache.get(blob_path(digest), {"Range": "bytes=-100"})
    assert (part.status, part.body) == (206, data[-100:])
    size = len(data)
    assert part.headers["Content-Range"] == f"bytes {size - 100}-{size - 1}/{size}"
    unchanged = await regcache.get(blob_path(digest), {"If-None-Match": f'"{digest}"'})
    assert (unchanged.status, unchanged.body) == (304, b"")
    refused = await regcache.get(blob_path(digest), {"Range": f"bytes={size}-"})
    assert refused.status == 416


async def test_the_digest_is_the_etag_and_conditional_requests_honour_it(
    regcache: InProcessRegcache, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    first = await regcache.get(blob_path(digest))
    etag = f'"{digest}"'
    assert first.headers["ETag"] == etag
    unchanged = await regcache.get(blob_path(digest), {"If-None-Match": f'"other", {etag}'})
    assert unchanged.status == 304
    assert unchanged.body == b""
    changed = await regcache.get(blob_path(digest), {"If-None-Match": '"other"'})
    assert changed.status == 200
    assert changed.body == data
    same = await regcache.get(blob_path(digest), {"Range": "bytes=0-9", "If-Range": etag})
    assert (same.status, same.body) == (206, data[:10])
    other = await regcache.get(blob_path(digest), {"Range": "bytes=0-9", "If-Range": '"x"'})
    assert (other.status, other.body) == (200, data)


async def test_head_of_a_blob_cold_downloading_and_cached(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest, size = image.layer_digests[1], len(image.layers[1])

    async def head(result: str) -> None:
        answer = await regcache.head(blob_path(digest))
        assert answer.status == 200
        assert int(answer.headers["Content-Length"]) == size
        assert answer.headers["Docker-Content-Digest"] == digest
        assert registry.count("HEAD", blob_path(digest)) == 1
        assert await regcache.metric("regcache_cache_requests_total", result=result) >= 1

    await head("miss")
    registry.faults.append(stall_once(digest))
    async with regcache.client.get(blob_path(digest)) as response:
        await response.content.readexactly(KIB)
        await head("miss")  # answered from the download under way
        assert await response.read() == image.layers[1][KIB:]
    await regcache.settled("regcache_inflight_downloads", 0)
    await head("hit")


async def test_a_client_that_disconnects_cancels_nothing(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest = image.layer_digests[1]
    registry.faults.append(stall_once(digest))
    async with aiohttp.ClientSession() as quitter:
        async with quitter.get(regcache.url + blob_path(digest)) as response:
            await response.content.readexactly(KIB)
    assert (await regcache.get(blob_path(digest))).body == image.layers[1]
    assert registry.count("GET", blob_path(digest)) == 1


async def test_a_blob_without_a_length_is_served_once_verified(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest = image.layer_digests[1]
    registry.faults.append(Fault(path=blob_path(digest), chunked=True))
    answers = await asyncio.gather(*(regcache.get(blob_path(digest)) for _ in range(3)))
    assert all(answer.body == image.layers[1] for answer in answers)
    assert registry.count("GET", blob_path(digest)) == 1


async def test_unknown_blob_is_blob_unknown(regcache: InProcessRegcache) -> None:
    for answer in (
        await regcache.get(blob_path("sha256:" + "ab" * 32)),
        await regcache.head(blob_path("sha256:" + "ab" * 32)),
    ):
        assert answer.status == 404
    missing = await regcache.get(blob_path("sha256:" + "ab" * 32))
    assert missing.error_code == "BLOB_UNKNOWN"
    assert await regcache.metric("regcache_inflight_downloads") == 0


async def test_blobs_are_shared_across_repositories_and_upstream_names(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(aliases=("hub",))
    digest = image.layer_digests[0]
    for path in (
        blob_path(digest),
        f"/v2/hub/library/app/blobs/{digest}",
        f"/v2/library/app/blobs/{digest}?ns=docker.io",
    ):
        answer = await regcache.get(path)
        assert answer.body == image.layers[0]
    assert answer.headers["OCI-Namespace"] == "docker.io"
    assert registry.count("GET", blob_path(digest)) == 1
