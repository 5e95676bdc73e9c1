"""The local tier (storage.local_tier) in front of the S3 store, on Ceph's RADOS Gateway:
hot blobs served from this replica's disk with sendfile, without asking the bucket, within
the tier's own bound, and still served while the gateway is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.oci.digest import Digest
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.ceph import CephCluster
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

TIER = "tier/blobs"


def tier_file(regcache: InProcessRegcache, digest: str) -> Path:
    parsed = Digest.parse(digest)
    return regcache.config.cache_dir / TIER / parsed.algorithm / parsed.hex[:2] / parsed.hex


async def tier_reads(regcache: InProcessRegcache) -> tuple[float, float]:
    hits = await regcache.metric("regcache_local_tier_requests_total", result="hit")
    misses = await regcache.metric("regcache_local_tier_requests_total", result="miss")
    return hits, misses


async def object_gets(regcache: InProcessRegcache) -> float:
    return await regcache.metric("regcache_s3_requests_total", op="GetObject")


async def test_a_pulled_blob_is_then_served_from_the_tier_with_sendfile(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    image: FakeImage,
    sendfiles: list[tuple[str, int, int]],
) -> None:
    regcache = await make_proxy(storage_local_tier=1024 * KIB, **s3_settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    first = await regcache.get(blob_path(digest))
    assert (first.status, first.body) == (200, layer)
    # Stored in the bucket, and linked into the tier from the download's spool.
    assert tier_file(regcache, digest).read_bytes() == layer
    assert regcache.files("tmp") == []

    sendfiles.clear()
    second = await regcache.get(blob_path(digest))
    assert (second.status, second.headers["X-Cache"], second.body) == (200, "HIT", layer)
    assert sendfiles == [(str(tier_file(regcache, digest)), 0, len(layer))]
    assert await tier_reads(regcache) == (1, 0)
    assert await object_gets(regcache) == 0

    ranged = await regcache.get(blob_path(digest), {"Range": "bytes=1000-70000"})
    assert (ranged.status, ranged.body) == (206, layer[1000:70001])
    assert sendfiles[-1] == (str(tier_file(regcache, digest)), 1000, 69001)
    assert await tier_reads(regcache) == (2, 0)
    assert await object_gets(regcache) == 0


async def test_a_replica_with_an_empty_tier_fills_it_on_a_whole_read(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    image: FakeImage,
    registry: FakeRegistry,
    tmp_path: Path,
) -> None:
    digest, layer = image.layer_digests[1], image.layers[1]
    owner = await make_proxy(cache_dir=tmp_path / "owner", **s3_settings)
    assert (await owner.get(blob_path(digest))).body == layer
    other = await make_proxy(
        cache_dir=tmp_path / "other", storage_local_tier=1024 * KIB, **s3_settings
    )
    # A range is sent from the bucket and copies nothing; the whole blob fills the tier.
    ranged = await other.get(blob_path(digest), {"Range": "bytes=10-"})
    assert (ranged.status, ranged.body) == (206, layer[10:])
    assert not tier_file(other, digest).exists()
    whole = await other.get(blob_path(digest))
    assert (whole.status, whole.body) == (200, layer)
    assert tier_file(other, digest).read_bytes() == layer
    # Three lookups: this replica's first request looks again once the upstream confirmed
    # that the repository references the blob (its index is its own here).
    assert await tier_reads(other) == (0, 3)
    assert await object_gets(other) == 2
    again = await other.get(blob_path(digest))
    assert (again.status, again.body) == (200, layer)
    assert await tier_reads(other) == (1, 3)
    assert await object_gets(other) == 2
    assert registry.count("GET", blob_path(digest)) == 1


async def test_the_tier_keeps_its_bound_and_the_bucket_serves_what_it_dropped(
    make_proxy: ProxyFactory, s3_settings: dict[str, Any], registry: FakeRegistry
) -> None:
    image = registry.push_image("library/app", "1.0", layer_sizes=(64 * KIB,) * 3)
    first, second, third = image.layer_digests
    # Room for two of the three layers.
    regcache = await make_proxy(storage_local_tier=160 * KIB, **s3_settings)
    for digest, layer in zip(image.layer_digests, image.layers, strict=True):
        assert (await regcache.get(blob_path(digest))).body == layer
    assert not tier_file(regcache, first).exists()
    assert tier_file(regcache, second).exists()
    assert tier_file(regcache, third).exists()

    assert (await regcache.get(blob_path(second))).body == image.layers[1]  # a hit: most recent
    dropped = await regcache.get(blob_path(first))
    assert (dropped.status, dropped.body) == (200, image.layers[0])
    assert await object_gets(regcache) == 1
    assert await tier_reads(regcache) == (1, 1)
    # Read whole, it is back in the tier, and the least recently read one left.
    assert tier_file(regcache, first).exists()
    assert tier_file(regcache, second).exists()
    assert not tier_file(regcache, third).exists()
    assert len(regcache.files(TIER)) == 2
    assert registry.count("GET", blob_path(first)) == 1


async def test_with_the_gateway_killed_the_tier_still_serves_its_blobs(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    image: FakeImage,
    registry: FakeRegistry,
    rgw: CephCluster,
) -> None:
    regcache = await make_proxy(storage_local_tier=1024 * KIB, **s3_settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    assert (await regcache.get(blob_path(digest))).body == layer
    rgw.rgw.kill()
    try:
        for _ in range(3):
            answer = await regcache.get(blob_path(digest))
            assert (answer.status, answer.headers["X-Cache"], answer.body) == (200, "HIT", layer)
        ranged = await regcache.get(blob_path(digest), {"Range": "bytes=5-9"})
        assert (ranged.status, ranged.body) == (206, layer[5:10])
        assert await tier_reads(regcache) == (4, 0)
        assert registry.count("GET", blob_path(digest)) == 1
    finally:
        rgw.rgw.start()
