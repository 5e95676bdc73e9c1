"""Upstream outages: known tags are served stale, marked so; the rest get a clean error."""

from __future__ import annotations

import pytest

from tests.fast.conftest import ProxyFactory
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

TAG = "/v2/library/app/manifests/1.0"
ACCEPT = {"Accept": OCI_MANIFEST}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
STALE = '110 regcache "Response is Stale"'
MANIFESTS = r"/v2/library/app/manifests/.*"


@pytest.fixture
async def warm(make_proxy: ProxyFactory, image: FakeImage) -> InProcessRegcache:
    """A regcache that has served ``library/app:1.0`` and must revalidate it every time."""
    regcache = await make_proxy(tag_ttl=0)
    assert (await regcache.get(TAG, ACCEPT)).status == 200
    return regcache


OUTAGES = {
    "500": Fault(path=MANIFESTS, status=500),
    "503": Fault(path=MANIFESTS, status=503),
    "429": Fault(path=MANIFESTS, status=429, headers={"Retry-After": "30"}),
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
async def test_known_tag_is_served_stale_while_the_upstream_fails(
    warm: InProcessRegcache, registry: FakeRegistry, image: FakeImage, outage: Fault
) -> None:
    registry.faults.append(outage)
    answer = await warm.get(TAG, ACCEPT)
    assert answer.status == 200
    assert answer.body == image.manifest
    assert answer.headers["Warning"] == STALE
    head = await warm.head(TAG, ACCEPT)
    assert head.headers["Warning"] == STALE
    assert head.headers["Docker-Content-Digest"] == image.digest
    assert await warm.metric("regcache_stale_served_total", upstream="docker.io") == 2

    registry.faults.clear()
    assert "Warning" not in (await warm.get(TAG, ACCEPT)).headers


async def test_known_tag_is_served_stale_while_the_upstream_is_down(
    warm: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    await registry.stop()
    answer = await warm.get(TAG, ACCEPT)
    assert answer.status == 200
    assert answer.body == image.manifest
    assert answer.headers["Warning"] == STALE
    # Blobs and manifests by digest never need the upstream once cached.
    by_digest = await warm.get(f"/v2/library/app/manifests/{image.digest}")
    assert by_digest.status == 200
    assert "Warning" not in by_digest.headers
    assert await warm.metric("regcache_stale_served_total") == 1
    assert await warm.metric("regcache_upstream_requests_total", status="error") >= 1

    await registry.start()
    assert "Warning" not in (await warm.get(TAG, ACCEPT)).headers


async def test_other_accept_lists_get_the_last_known_manifest_if_they_accept_its_type(
    warm: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    await registry.stop()
    both = await warm.get(TAG, {"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
    assert both.status == 200
    assert both.body == image.manifest
    assert both.headers["Warning"] == STALE
    docker_only = await warm.get(TAG, {"Accept": DOCKER_MANIFEST})
    assert docker_only.status == 503
    assert docker_only.error_code == "UNAVAILABLE"


async def test_with_nothing_cached_clients_get_the_upstreams_answer(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(Fault(status=429, headers={"Retry-After": "42"}, times=1))
    limited = await regcache.get(TAG, ACCEPT)
    assert limited.status == 429
    assert limited.error_code == "TOOMANYREQUESTS"
    assert limited.headers["Retry-After"] == "42"

    await registry.stop()
    down = await regcache.get(TAG, ACCEPT)
    assert down.status == 503
    assert down.error_code == "UNAVAILABLE"
    assert await regcache.metric("regcache_cache_requests_total", result="error") == 2


async def test_a_tag_known_only_from_a_head_is_stale_for_heads_but_not_for_gets(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(tag_ttl=0)
    assert (await regcache.head(TAG, ACCEPT)).status == 200
    registry.faults.append(Fault(status=502))
    head = await regcache.head(TAG, ACCEPT)
    assert head.status == 200
    assert head.headers["Warning"] == STALE
    assert head.headers["Docker-Content-Digest"] == image.digest
    # A body it never had cannot be served stale.
    assert (await regcache.get(TAG, ACCEPT)).status == 503


@pytest.mark.parametrize("keep_serving", [False, True])
async def test_tag_deleted_upstream_is_passed_on_unless_configured(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, keep_serving: bool
) -> None:
    regcache = await make_proxy(tag_ttl=0, serve_stale_on_not_found=keep_serving)
    assert (await regcache.get(TAG, ACCEPT)).status == 200
    del registry.tags["library/app"]["1.0"]
    answer = await regcache.get(TAG, ACCEPT)
    if keep_serving:
        assert answer.status == 200
        assert answer.body == image.manifest
        assert answer.headers["Warning"] == STALE
    else:
        assert answer.status == 404
        assert answer.error_code == "MANIFEST_UNKNOWN"


async def test_a_deleted_tag_is_not_served_stale_by_a_later_outage(
    warm: InProcessRegcache, registry: FakeRegistry
) -> None:
    del registry.tags["library/app"]["1.0"]
    assert (await warm.get(TAG, ACCEPT)).status == 404
    registry.faults.append(Fault(status=503))
    assert (await warm.get(TAG, ACCEPT)).status == 503
    assert await warm.metric("regcache_stale_served_total") == 0


async def test_offline_mode_serves_the_cache_and_never_calls_out(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(tag_ttl=0)
    layer = f"/v2/library/app/blobs/{image.layer_digests[0]}"
    assert (await regcache.get(TAG, ACCEPT)).status == 200
    assert (await regcache.get(layer)).body == image.layers[0]
    await regcache.restart(offline=True)
    before = len(registry.seen)

    tag = await regcache.get(TAG, ACCEPT)
    assert tag.body == image.manifest
    assert tag.headers["Warning"] == STALE
    # A client that accepts anything is served what there is, as it would be online.
    assert (await regcache.get(TAG, {"Accept": "*/*"})).body == image.manifest
    assert (await regcache.get(TAG, {"Accept": "application/x-other"})).status == 404
    assert (await regcache.get(layer)).body == image.layers[0]
    missing = {
        "/v2/library/other/manifests/1.0": "MANIFEST_UNKNOWN",
        f"/v2/library/app/blobs/{image.layer_digests[1]}": "BLOB_UNKNOWN",
        "/v2/library/app/tags/list": "NAME_UNKNOWN",
    }
    for path, code in missing.items():
        answer = await regcache.get(path)
        assert answer.status == 404, path
        assert answer.error_code == code
        assert "offline" in answer.json()["errors"][0]["message"]
    assert (await regcache.head(f"/v2/library/app/blobs/{image.layer_digests[1]}")).status == 404
    assert len(registry.seen) == before
