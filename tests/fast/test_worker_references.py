"""Which repositories reference what, across the workers of one server: a reference one
worker learned is in the index before its client's next request, which may reach another
worker. Two regcaches in this process on one cache directory stand in for two workers, as in
test_worker_flight.py; their usage records are batched each on its own."""

from __future__ import annotations

from pathlib import Path

from tests.fast.conftest import ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeRegistry


async def test_a_blob_cached_by_one_worker_is_served_by_another_while_the_upstream_fails(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    image = registry.push_image("library/app", "1")
    cache = tmp_path / "shared"
    first, second = [await make_proxy(cache_dir=cache, workers=2) for _ in range(2)]
    async with first.client.get("/v2/library/app/manifests/1") as response:
        assert response.status == 200
    layer = image.layer_digests[0]
    async with first.client.get(blob_path(layer)) as response:
        assert await response.read() == image.layers[0]
    # The upstream fails from now on; the blob is cached and its repository references it.
    registry.faults.append(Fault(path=r"/v2/.+", status=503))
    async with second.client.get(blob_path(layer)) as response:
        assert response.status == 200
        assert await response.read() == image.layers[0]


async def test_a_repository_the_upstream_confirmed_is_known_to_the_other_workers(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    image = registry.push_image("library/app", "1")
    registry.add_blob(image.layers[0], repository="library/other")
    cache = tmp_path / "shared"
    first, second = [await make_proxy(cache_dir=cache, workers=2) for _ in range(2)]
    layer = image.layer_digests[0]
    async with first.client.get(blob_path(layer)) as response:
        assert await response.read() == image.layers[0]
    # Cached for library/app; library/other's claim is confirmed by the upstream's HEAD.
    async with first.client.get(blob_path(layer, "library/other")) as response:
        assert response.status == 200
    registry.faults.append(Fault(path=r"/v2/.+", status=503))
    async with second.client.get(blob_path(layer, "library/other")) as response:
        assert response.status == 200
        assert await response.read() == image.layers[0]
