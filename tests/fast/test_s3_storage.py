"""regcache with its blobs in an S3 bucket (storage.backend: s3), on Ceph's RADOS Gateway.

The store itself is held to the blob store conformance suite; these tests show the server
working on it: pulls, ranges, downloads followed while they stream, and a restart that finds
the blobs in the bucket.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.fast.conftest import KIB, ProxyFactory, blob_path, stall_once
from tests.support.fakeregistry import FakeImage, FakeRegistry


async def test_an_image_is_pulled_through_and_its_blobs_land_in_the_bucket(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    registry: FakeRegistry,
    image: FakeImage,
    tmp_path: Path,
) -> None:
    regcache = await make_proxy(cache_dir=tmp_path / "cache", **s3_settings)
    manifest = await regcache.get(f"/v2/{image.repository}/manifests/{image.tag}")
    assert manifest.status == 200
    assert manifest.body == image.manifest
    for digest, layer in zip(image.layer_digests, image.layers, strict=True):
        answer = await regcache.get(blob_path(digest))
        assert answer.status == 200
        assert answer.body == layer
    assert await regcache.metric("regcache_cache_size_bytes") == sum(map(len, image.layers))
    # Nothing of the blobs stays on the local disk: the spool is emptied at each commit.
    assert regcache.files("tmp") == []
    assert regcache.files("blobs") == []

    # A restart on the same bucket, with the upstream gone: the blobs come from the bucket.
    await regcache.stop()
    await registry.stop()
    restarted = await make_proxy(cache_dir=tmp_path / "cache", **s3_settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    again = await restarted.get(blob_path(digest))
    assert again.status == 200
    assert again.body == layer
    ranged = await restarted.get(blob_path(digest), {"Range": "bytes=1000-70000"})
    assert ranged.status == 206
    assert ranged.body == layer[1000:70001]


async def test_clients_follow_a_download_while_it_goes_up_to_the_bucket(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    registry: FakeRegistry,
    image: FakeImage,
) -> None:
    regcache = await make_proxy(**s3_settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    registry.faults.append(stall_once(digest, after=100 * KIB))
    answers = await asyncio.gather(
        *(regcache.get(blob_path(digest)) for _ in range(4)),
        regcache.get(blob_path(digest), {"Range": "bytes=200000-"}),
    )
    assert all(answer.body == layer for answer in answers[:4])
    assert answers[4].body == layer[200000:]
    assert registry.count("GET", blob_path(digest)) == 1


async def test_with_redirect_a_cached_blob_is_a_307_to_a_url_that_serves_it(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    registry: FakeRegistry,
    image: FakeImage,
    tmp_path: Path,
) -> None:
    regcache = await make_proxy(
        cache_dir=tmp_path / "cache", storage_s3_redirect=True, **s3_settings
    )
    digest, layer = image.layer_digests[0], image.layers[0]
    # A miss streams from here, as it arrives: nothing is in the bucket to send the client to.
    first = await regcache.get(blob_path(digest))
    assert first.status == 200
    assert first.body == layer

    async with regcache.client.get(
        regcache.url + blob_path(digest), allow_redirects=False
    ) as answer:
        assert answer.status == 307
        assert answer.headers["Docker-Content-Digest"] == digest
        location = answer.headers["Location"]
    # Presigned with SigV4 for the bucket's own endpoint: no credentials needed, and the bytes.
    assert location.startswith(s3_settings["storage_s3_endpoint"])
    assert "X-Amz-Signature=" in location
    async with aiohttp.ClientSession() as anyone, anyone.get(location) as fetched:
        assert fetched.status == 200
        assert await fetched.read() == layer
    # HEAD still answers here; and the URL is only for a repository that references the blob.
    assert (await regcache.head(blob_path(digest))).status == 200
    other = await regcache.get(blob_path(digest, "library/other"))
    assert other.status == 404
    assert "Location" not in other.headers
