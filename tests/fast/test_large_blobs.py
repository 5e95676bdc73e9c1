"""A blob of many write batches, past the size whose last byte goes out once its digest
checks: every client gets every byte, or a connection closed short; one upstream GET."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.fast.conftest import MIB, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

CLIENTS = 3


@pytest.fixture
def large(registry: FakeRegistry) -> FakeImage:
    """One 12 MiB layer: twelve write batches, above the early-release size."""
    return registry.push_image("library/app", "large", layer_sizes=(12 * MIB,))


async def test_concurrent_clients_get_every_byte_from_one_upstream_get(
    regcache: InProcessRegcache, registry: FakeRegistry, large: FakeImage
) -> None:
    path = blob_path(large.layer_digests[0])
    answers = await asyncio.gather(*(regcache.get(path) for _ in range(CLIENTS)))
    assert all(a.status == 200 and a.body == large.layers[0] for a in answers)
    assert registry.count("GET", path) == 1
    await regcache.settled("regcache_inflight_downloads", 0)
    assert await regcache.metric("regcache_cache_size_bytes") == len(large.layers[0])
    assert (await regcache.get(path)).headers["X-Cache"] == "HIT"


async def test_wrong_bytes_never_reach_a_client_whole_nor_the_cache(
    regcache: InProcessRegcache, registry: FakeRegistry, large: FakeImage
) -> None:
    path = blob_path(large.layer_digests[0])
    registry.faults.append(Fault(path=path, method="GET", wrong_body=True, times=1))

    async def fetch_short() -> int:
        received = [0]

        async def read(response: aiohttp.ClientResponse) -> None:
            async for chunk in response.content.iter_any():
                received[0] += len(chunk)

        async with regcache.client.get(path) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await read(response)
        return received[0]

    received = await asyncio.gather(*(fetch_short() for _ in range(CLIENTS)))
    # All but the held-back end may have gone out; never the last byte.
    assert all(count < len(large.layers[0]) for count in received)
    assert await regcache.metric("regcache_digest_mismatch_total", kind="blob") == 1
    await regcache.settled("regcache_inflight_downloads", 0)
    assert regcache.files("blobs") == []
    assert regcache.files("tmp") == []
    assert (await regcache.get(path)).body == large.layers[0]


async def test_a_disk_filling_up_between_batches_still_serves_every_byte(
    regcache: InProcessRegcache,
    registry: FakeRegistry,
    large: FakeImage,
    disk_full_after: Callable[[int], None],
) -> None:
    disk_full_after(5 * MIB + 1)  # mid-batch, with the next batch received meanwhile
    path = blob_path(large.layer_digests[0])
    answers = await asyncio.gather(*(regcache.get(path) for _ in range(CLIENTS)))
    assert all(a.status == 200 and a.body == large.layers[0] for a in answers)
    assert await regcache.metric("regcache_cache_write_failures_total", reason="disk_full") == 1
    await regcache.settled("regcache_inflight_downloads", 0)
    assert regcache.files("blobs") == []
    assert regcache.files("tmp") == []
