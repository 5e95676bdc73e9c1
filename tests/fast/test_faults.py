"""Upstreams that drop, stall or lie mid-blob, and a cache disk that fills up: clients get the
right bytes or a clean failure, and nothing unverified is ever cached."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

TAG = "/v2/library/app/manifests/1.0"


def blob_fault(image: FakeImage, **knobs: Any) -> Fault:
    """A fault on GETs of the image's 300 KiB layer."""
    return Fault(path=blob_path(image.layer_digests[1]), method="GET", **knobs)


async def fetch_short(regcache: InProcessRegcache, path: str) -> None:
    """A GET that must end in a connection closed short of the declared length."""
    async with regcache.client.get(path) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def assert_nothing_cached(regcache: InProcessRegcache) -> None:
    await regcache.settled("regcache_inflight_downloads", 0)
    assert regcache.files("blobs") == []
    assert regcache.files("tmp") == []
    assert await regcache.metric("regcache_cache_size_bytes") == 0


@pytest.fixture
def full_disk(disk_full_after: Callable[[int], None]) -> None:
    """Room for the 64 KiB layer, not for the 300 KiB one."""
    disk_full_after(100 * KIB)


async def test_a_dropped_download_is_resumed_with_a_range_request(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(blob_fault(image, drop_after=100 * KIB, times=1))
    path = blob_path(image.layer_digests[1])
    answers = await asyncio.gather(*(regcache.get(path) for _ in range(3)))
    assert all(answer.body == image.layers[1] for answer in answers)
    [resumed] = registry.ranges()
    # It goes on from what it had, at most what the upstream sent before the cut.
    assert 0 < int(resumed.removeprefix("bytes=").removesuffix("-")) <= 100 * KIB
    assert registry.count("GET", path) == 2
    assert await regcache.metric("regcache_upstream_resumes_total", upstream="docker.io") == 1
    assert await regcache.metric("regcache_cache_size_bytes") == len(image.layers[1])


async def test_a_resume_answered_with_the_whole_blob_skips_what_it_has(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults += [
        blob_fault(image, drop_after=100 * KIB, times=1),
        blob_fault(image, ignore_range=True, times=1),
    ]
    assert (await regcache.get(blob_path(image.layer_digests[1]))).body == image.layers[1]
    assert len(registry.ranges()) == 1


async def test_a_failed_resume_is_retried(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults += [
        blob_fault(image, drop_after=100 * KIB, times=1),
        blob_fault(image, status=503, times=1),
    ]
    assert (await regcache.get(blob_path(image.layer_digests[1]))).body == image.layers[1]
    assert await regcache.metric("regcache_upstream_resumes_total") == 2


async def test_a_stalled_download_is_resumed(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(read_timeout=0.5)
    registry.faults.append(blob_fault(image, stall=(100 * KIB, 5.0), times=1))
    assert (await regcache.get(blob_path(image.layer_digests[1]))).body == image.layers[1]
    assert await regcache.metric("regcache_upstream_resumes_total") == 1


async def test_after_repeated_drops_clients_see_a_short_body_and_nothing_is_cached(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(blob_fault(image, drop_after=50 * KIB))
    path = blob_path(image.layer_digests[1])
    await asyncio.gather(*(fetch_short(regcache, path) for _ in range(2)))
    # The first attempt and three resumes.
    assert registry.count("GET", path) == 4
    assert await regcache.metric("regcache_upstream_resumes_total") == 3
    await assert_nothing_cached(regcache)

    registry.faults.clear()
    assert (await regcache.get(path)).body == image.layers[1]


async def test_a_blob_that_fails_its_digest_is_never_served_whole_or_cached(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(blob_fault(image, wrong_body=True, times=1))
    path = blob_path(image.layer_digests[1])
    # The headers went out before the last byte could be checked: the client sees a failed
    # pull, not a complete body of wrong bytes.
    await fetch_short(regcache, path)
    assert await regcache.metric("regcache_digest_mismatch_total", kind="blob") == 1
    await assert_nothing_cached(regcache)
    assert (await regcache.get(path)).body == image.layers[1]
    assert registry.count("GET", path) == 2


async def test_a_blob_without_a_length_that_fails_its_digest_is_502(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(blob_fault(image, wrong_body=True, chunked=True))
    answer = await regcache.get(blob_path(image.layer_digests[1]))
    assert answer.status == 502
    assert answer.error_code == "UNKNOWN"
    assert answer.json()["errors"][0]["detail"]["expected"] == image.layer_digests[1]
    await assert_nothing_cached(regcache)


async def test_a_manifest_that_fails_its_digest_is_502_and_not_cached(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(Fault(path=r"/v2/library/app/manifests/.*", wrong_digest=True))
    by_digest = f"/v2/library/app/manifests/{image.digest}"
    registry.faults.append(Fault(path=by_digest, wrong_body=True))
    for path in (TAG, by_digest):
        answer = await regcache.get(path, {"Accept": OCI_MANIFEST})
        assert answer.status == 502
        assert answer.error_code == "UNKNOWN"
    assert await regcache.metric("regcache_digest_mismatch_total", kind="manifest") == 2

    registry.faults.clear()
    assert (await regcache.get(TAG, {"Accept": OCI_MANIFEST})).body == image.manifest


async def test_a_blob_head_answered_for_another_digest_is_502(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    path = blob_path(image.layer_digests[0])
    registry.faults.append(Fault(path=path, wrong_digest=True))
    answer = await regcache.head(path)
    assert answer.status == 502
    assert await regcache.metric("regcache_digest_mismatch_total", kind="blob") == 1


async def test_disk_full_mid_blob_still_serves_every_client_and_caches_nothing(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage, full_disk: None
) -> None:
    path = blob_path(image.layer_digests[1])
    registry.faults.append(blob_fault(image, stall=(150 * KIB, 0.2), times=1))
    answers = await asyncio.gather(*(regcache.get(path) for _ in range(3)))
    assert all(answer.status == 200 and answer.body == image.layers[1] for answer in answers)
    assert await regcache.metric("regcache_cache_write_failures_total", reason="disk_full") == 1
    await assert_nothing_cached(regcache)
    # Small blobs still fit, and are cached.
    assert (await regcache.get(blob_path(image.layer_digests[0]))).body == image.layers[0]
    assert len(regcache.files("blobs")) == 1


async def test_disk_full_on_a_blob_without_a_length_is_503(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage, full_disk: None
) -> None:
    registry.faults.append(blob_fault(image, chunked=True))
    answer = await regcache.get(blob_path(image.layer_digests[1]))
    assert answer.status == 503
    assert answer.error_code == "UNAVAILABLE"
    await assert_nothing_cached(regcache)


@pytest.mark.usefixtures("index_full")
async def test_a_full_index_costs_caching_never_the_pull(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    for _ in range(2):
        answer = await regcache.get(TAG, {"Accept": OCI_MANIFEST})
        assert answer.status == 200
        assert answer.body == image.manifest
    assert registry.count("GET", r"/v2/library/app/manifests/.*") == 2
    # A manifest with its tag answer (one write) per pull could not be written, nor, at the
    # first pull, the references it taught (written at once for the other workers).
    assert await regcache.metric("regcache_cache_write_failures_total", reason="index") == 3
    assert (await regcache.get(blob_path(image.layer_digests[0]))).body == image.layers[0]


async def test_disk_full_on_a_small_blob_still_serves_it_and_caches_nothing(
    regcache: InProcessRegcache, image: FakeImage, disk_full_after: Callable[[int], None]
) -> None:
    """A small blob is written and stored in one go (transfer.WHOLE_BYTES): a full disk
    there costs its caching, as mid-blob for a large one."""
    disk_full_after(1024)
    digest, layer = image.layer_digests[0], image.layers[0]
    answers = await asyncio.gather(*(regcache.get(blob_path(digest)) for _ in range(2)))
    assert all(answer.status == 200 and answer.body == layer for answer in answers)
    assert await regcache.metric("regcache_cache_write_failures_total", reason="disk_full") >= 1
    await assert_nothing_cached(regcache)
