"""No cross-repository reads: what regcache cached for one repository reaches a client that
names another repository, or another upstream, only when the upstream says it holds it there.

The fake registry holds ``acme/private``'s image in that repository only; ``library/public``
holds an image of its own. Every attack first caches the private image through regcache.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.config import UpstreamConfig
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import UPSTREAM_DEFAULTS, Answer, InProcessRegcache

PRIVATE = "acme/private"
PUBLIC = "library/public"
MIRROR = "mirror.example.com"  # a second upstream entry for the same registry
ACCEPT = {"Accept": OCI_MANIFEST}


@pytest.fixture
def private(registry: FakeRegistry) -> FakeImage:
    registry.push_image(PUBLIC, "1.0")
    return registry.push_image(PRIVATE, "1.0", layer_sizes=(64 * KIB, 300 * KIB))


def two_upstreams(registry: FakeRegistry, **mirror: Any) -> dict[str, Any]:
    """docker.io (alias ``hub``) and MIRROR, both at the fake registry."""
    return {
        "upstreams": (
            UpstreamConfig(
                name="docker.io", url=registry.url, aliases=("hub",), **UPSTREAM_DEFAULTS
            ),
            UpstreamConfig(name=MIRROR, url=registry.url, **{**UPSTREAM_DEFAULTS, **mirror}),
        )
    }


@pytest.fixture
async def regcache(make_proxy: ProxyFactory, registry: FakeRegistry) -> InProcessRegcache:
    return await make_proxy(**two_upstreams(registry))


async def pull(regcache: InProcessRegcache, image: FakeImage, repository: str) -> None:
    """The image by tag and its blobs, through ``repository``; all of it is cached after."""
    answer = await regcache.get(f"/v2/{repository}/manifests/{image.tag}", ACCEPT)
    assert (answer.status, answer.body) == (200, image.manifest)
    for digest, data in zip(image.layer_digests, image.layers, strict=True):
        assert (await regcache.get(blob_path(digest, repository))).body == data


# Every other name for the public repository, and the private one through another upstream.
OTHER_NAMES = {
    "other repository": "/v2/library/public/{kind}/{ref}",
    "upstream alias": "/v2/hub/library/public/{kind}/{ref}",
    "other upstream, path": f"/v2/{MIRROR}/library/public/{{kind}}/{{ref}}",
    "other upstream, ns=": f"/v2/library/public/{{kind}}/{{ref}}?ns={MIRROR}",
    "default upstream, ns=": "/v2/library/public/{kind}/{ref}?ns=docker.io",
    "short name": "/v2/public/{kind}/{ref}",
}


def refused(answer: Answer, code: str, secret: bytes) -> None:
    assert answer.status == 404, answer
    assert answer.error_code == code
    assert secret not in answer.body
    assert "Docker-Content-Digest" not in answer.headers


@pytest.mark.parametrize("name", OTHER_NAMES.values(), ids=OTHER_NAMES.keys())
async def test_private_content_is_not_served_under_another_name(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage, name: str
) -> None:
    await pull(regcache, private, PRIVATE)
    for digest, data in zip(private.layer_digests, private.layers, strict=True):
        path = name.format(kind="blobs", ref=digest)
        refused(await regcache.get(path), "BLOB_UNKNOWN", data)
        refused(await regcache.get(path, {"Range": "bytes=0-99"}), "BLOB_UNKNOWN", data)
        assert (await regcache.head(path)).status == 404
    path = name.format(kind="manifests", ref=private.digest)
    refused(await regcache.get(path, ACCEPT), "MANIFEST_UNKNOWN", private.manifest)
    assert (await regcache.head(path, ACCEPT)).status == 404
    # Each answer came from the upstream, which was never asked for the bytes again.
    for digest in private.layer_digests:
        assert registry.count("GET", rf"/v2/.+/blobs/{digest}") == 1
    assert registry.count("GET", rf"/v2/.+/manifests/{private.digest}") == 0


async def test_the_same_repository_through_another_upstream_name_is_confirmed_once(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage
) -> None:
    await pull(regcache, private, PRIVATE)
    digest = private.layer_digests[1]
    for _ in range(2):
        answer = await regcache.get(f"/v2/{PRIVATE}/blobs/{digest}?ns={MIRROR}")
        assert answer.body == private.layers[1]
    assert registry.count("HEAD", blob_path(digest, PRIVATE)) == 1
    assert registry.count("GET", rf"/v2/.+/blobs/{digest}") == 1


async def test_a_layer_two_repositories_hold_is_served_from_cache_after_one_head(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage
) -> None:
    await pull(regcache, private, PRIVATE)
    digest, data = private.layer_digests[1], private.layers[1]
    registry.add_blob(data, PUBLIC)
    for _ in range(3):
        assert (await regcache.get(blob_path(digest, PUBLIC))).body == data
    assert (await regcache.head(blob_path(digest, PUBLIC))).status == 200
    assert registry.count("HEAD", blob_path(digest, PUBLIC)) == 1
    assert registry.count("GET", rf"/v2/.+/blobs/{digest}") == 1
    hits = await regcache.metric("regcache_cache_requests_total", kind="blob", result="hit")
    assert hits == 4


async def test_a_manifest_pulled_for_a_repository_vouches_for_its_blobs(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage
) -> None:
    await pull(regcache, private, PRIVATE)
    for data in (private.config, *private.layers):
        registry.add_blob(data, PUBLIC)
    registry.add_manifest(PUBLIC, private.manifest, OCI_MANIFEST, "shared")
    shared = FakeImage(
        PUBLIC, "shared", private.manifest, OCI_MANIFEST, private.config, private.layers
    )
    await pull(regcache, shared, PUBLIC)  # the layers cached for PRIVATE, by tag for PUBLIC
    assert registry.count("HEAD", rf"/v2/{PUBLIC}/blobs/.+") == 0
    assert registry.count("GET", rf"/v2/{PUBLIC}/blobs/.+") == 0


async def test_an_upstream_that_refuses_the_other_name_refuses_the_client(
    make_proxy: ProxyFactory,
) -> None:
    async with FakeRegistry(basic=("alice", "s3cret")) as registry:
        image = registry.push_image(PRIVATE, "1.0")
        upstreams = two_upstreams(registry)["upstreams"]
        with_password = UpstreamConfig(
            name="docker.io",
            url=registry.url,
            username="alice",
            password="s3cret",
            **UPSTREAM_DEFAULTS,
        )
        regcache = await make_proxy(upstreams=(with_password, upstreams[1]))
        await pull(regcache, image, PRIVATE)
        digest = image.layer_digests[0]
        answer = await regcache.get(f"/v2/{PRIVATE}/blobs/{digest}?ns={MIRROR}")
        assert answer.status == 401
        assert answer.error_code == "UNAUTHORIZED"
        assert image.layers[0] not in answer.body
        assert (await regcache.head(f"/v2/{PRIVATE}/blobs/{digest}?ns={MIRROR}")).status == 401


async def test_offline_mode_serves_only_known_references(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage
) -> None:
    await pull(regcache, private, PRIVATE)
    await regcache.restart(offline=True)
    seen = len(registry.seen)
    digest, data = private.layer_digests[0], private.layers[0]
    # Known from before the restart: the usage records are durable.
    assert (await regcache.get(blob_path(digest, PRIVATE))).body == data
    manifest = await regcache.get(f"/v2/{PRIVATE}/manifests/{private.digest}", ACCEPT)
    assert manifest.body == private.manifest
    for name in (PUBLIC, f"{MIRROR}/{PRIVATE}"):
        answer = await regcache.get(blob_path(digest, name))
        refused(answer, "BLOB_UNKNOWN", data)
        assert "offline" in answer.json()["errors"][0]["message"]
        assert (await regcache.head(blob_path(digest, name))).status == 404
        path = f"/v2/{name}/manifests/{private.digest}"
        refused(await regcache.get(path, ACCEPT), "MANIFEST_UNKNOWN", private.manifest)
    assert len(registry.seen) == seen


@pytest.fixture
def stalled(registry: FakeRegistry, private: FakeImage) -> str:
    """The private 300 KiB layer, whose first download goes silent for a while."""
    digest = private.layer_digests[1]
    path = blob_path(digest, PRIVATE)
    registry.faults.append(Fault(path=path, method="GET", stall=(64 * KIB, 0.5), times=1))
    return digest


async def test_a_download_under_way_is_not_joined_by_an_unconfirmed_repository(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage, stalled: str
) -> None:
    data = private.layers[1]
    async with regcache.client.get(blob_path(stalled, PRIVATE)) as response:
        await response.content.readexactly(KIB)
        assert await regcache.metric("regcache_inflight_downloads") == 1
        for name in (PUBLIC, f"{MIRROR}/{PUBLIC}"):
            refused(await regcache.get(blob_path(stalled, name)), "BLOB_UNKNOWN", data)
            assert (await regcache.head(blob_path(stalled, name))).status == 404
        assert await response.read() == data[KIB:]
    assert registry.count("GET", rf"/v2/.+/blobs/{stalled}") == 1
    assert await regcache.metric("regcache_dedup_joins_total", kind="blob") == 0


async def test_a_download_under_way_is_joined_by_a_confirmed_repository(
    regcache: InProcessRegcache, registry: FakeRegistry, private: FakeImage, stalled: str
) -> None:
    data = private.layers[1]
    registry.add_blob(data, PUBLIC)
    first = asyncio.create_task(regcache.get(blob_path(stalled, PRIVATE)))
    await regcache.settled("regcache_inflight_downloads", 1)
    second = await regcache.get(blob_path(stalled, PUBLIC))
    assert second.body == data
    assert (await first).body == data
    assert registry.count("HEAD", blob_path(stalled, PUBLIC)) == 1
    assert registry.count("GET", rf"/v2/.+/blobs/{stalled}") == 1
