"""Tags: trusted for tag_ttl, then revalidated with one HEAD; a GET only when they moved."""

from __future__ import annotations

import asyncio

from tests.fast.conftest import ProxyFactory
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

TAG = "/v2/library/app/manifests/1.0"
ACCEPT = {"Accept": OCI_MANIFEST}


def manifest_requests(registry: FakeRegistry, method: str) -> int:
    return registry.count(method, r"/v2/library/app/manifests/.+")


async def test_cold_tag_is_one_get_and_then_a_hit_within_the_ttl(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    for _ in range(3):
        answer = await regcache.get(TAG, ACCEPT)
        assert answer.status == 200
        assert answer.body == image.manifest
        assert answer.headers["Docker-Content-Digest"] == image.digest
        assert answer.headers["Content-Type"] == OCI_MANIFEST
        assert "Warning" not in answer.headers
    assert manifest_requests(registry, "GET") == 1
    assert manifest_requests(registry, "HEAD") == 0
    assert await regcache.metric("regcache_cache_requests_total", result="miss") == 1
    assert await regcache.metric("regcache_cache_requests_total", result="hit") == 2


async def test_expired_tag_is_revalidated_by_one_head_and_no_get(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(tag_ttl=1.0)
    assert (await regcache.get(TAG, ACCEPT)).body == image.manifest
    await asyncio.sleep(1.05)
    answer = await regcache.get(TAG, ACCEPT)
    assert answer.body == image.manifest
    assert manifest_requests(registry, "HEAD") == 1
    assert manifest_requests(registry, "GET") == 1
    assert await regcache.metric("regcache_cache_requests_total", result="revalidated") == 1
    # Revalidated means trusted for another tag_ttl.
    assert (await regcache.get(TAG, ACCEPT)).body == image.manifest
    assert manifest_requests(registry, "HEAD") == 1


async def test_moved_tag_costs_a_head_and_a_get_of_the_new_digest(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(tag_ttl=0)
    assert (await regcache.get(TAG, ACCEPT)).body == image.manifest
    moved = registry.push_image("library/app", "1.0", seed=1)
    answer = await regcache.get(TAG, ACCEPT)
    assert answer.body == moved.manifest
    assert answer.headers["Docker-Content-Digest"] == moved.digest
    assert manifest_requests(registry, "HEAD") == 1
    assert registry.count("GET", f"/v2/library/app/manifests/{moved.digest}") == 1


async def test_head_of_a_cold_tag_needs_no_get(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    head = await regcache.head(TAG, ACCEPT)
    assert head.status == 200
    assert head.headers["Docker-Content-Digest"] == image.digest
    assert int(head.headers["Content-Length"]) == len(image.manifest)
    assert head.body == b""
    assert manifest_requests(registry, "GET") == 0
    # The HEAD taught the tag; the GET that follows fetches the manifest by digest.
    assert (await regcache.get(TAG, ACCEPT)).body == image.manifest
    assert registry.count("GET", f"/v2/library/app/manifests/{image.digest}") == 1
    assert manifest_requests(registry, "HEAD") == 1


async def test_manifest_by_digest_is_fetched_once_and_never_revalidated(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(tag_ttl=0)
    path = f"/v2/library/app/manifests/{image.digest}"
    for _ in range(2):
        answer = await regcache.get(path)
        assert answer.body == image.manifest
        assert answer.headers["Content-Type"] == OCI_MANIFEST
    head = await regcache.head(path)
    assert head.headers["Docker-Content-Digest"] == image.digest
    assert int(head.headers["Content-Length"]) == len(image.manifest)
    assert len(registry.seen) == 1


async def test_head_by_digest_when_cold_asks_the_upstream_with_a_head(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    head = await regcache.head(f"/v2/library/app/manifests/{image.digest}")
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(image.manifest)
    assert manifest_requests(registry, "HEAD") == 1
    assert manifest_requests(registry, "GET") == 0


async def test_concurrent_cold_requests_for_a_tag_share_one_get(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    answers = await asyncio.gather(*(regcache.get(TAG, ACCEPT) for _ in range(8)))
    assert all(answer.body == image.manifest for answer in answers)
    assert manifest_requests(registry, "GET") == 1
    assert await regcache.metric("regcache_dedup_joins_total", kind="manifest") >= 1
