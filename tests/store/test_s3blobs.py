"""What only the S3 blob store promises, beyond the conformance suite: where its objects
go, that an upload under way shows nothing under the blob's key, which unfinished uploads
it clears, and that it works again once the gateway is back after an outage."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from proxy.oci.digest import Digest
from proxy.store import BlobReader, DigestMismatch, StoreUnavailable
from proxy.store.s3blobs import PART_SIZE, S3BlobStore
from proxy.store.s3calls import S3Location
from tests.support.ceph import MIN_PART_SIZE, CephCluster

BUCKET = "s3blobs"
LAYER = b"layer bytes " * 1000


@pytest.fixture
def location(rgw: CephCluster, tmp_path: Path) -> S3Location:
    rgw.create_bucket(BUCKET)
    endpoint = rgw.endpoint
    prefix = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    return S3Location(
        BUCKET,
        endpoint.url,
        endpoint.region,
        f"{prefix}/",
        endpoint.access_key,
        endpoint.secret_key,
    )


@pytest.fixture
async def store(location: S3Location, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    opened = S3BlobStore(location, tmp_path / "spool", part_size=MIN_PART_SIZE)
    await opened.open()
    yield opened
    await opened.close()


async def keys(store: S3BlobStore) -> list[str]:
    listed = await store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return [found["Key"] for found in listed.get("Contents", [])]


async def test_blobs_are_kept_under_the_prefix_by_digest(store: S3BlobStore) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER)
    await writer.commit()
    assert await keys(store) == [f"{store.prefix}blobs/sha256/{digest.hex}"]


async def test_an_upload_under_way_shows_nothing_under_the_blobs_key(store: S3BlobStore) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[: 2 * MIN_PART_SIZE])  # parts have gone up
    [(key, _, _)] = await store.uploads()
    assert key == store.key(digest)
    assert await keys(store) == []
    await writer.write(LAYER[2 * MIN_PART_SIZE :])
    await writer.commit()
    assert await store.uploads() == []
    assert await keys(store) == [store.key(digest)]


async def test_an_abort_while_a_part_goes_up_leaves_no_upload(store: S3BlobStore) -> None:
    writer = await store.writer(Digest.of(LAYER))
    await writer.write(LAYER[: 2 * MIN_PART_SIZE])  # the second part is on its way now
    await writer.abort()
    assert await store.uploads() == []
    assert await keys(store) == []


async def test_opening_aborts_only_uploads_left_long_ago(
    store: S3BlobStore, location: S3Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = Digest.of(LAYER)
    # Another replica's upload, under way right now: left alone.
    busy = await store.writer(digest)
    await busy.write(LAYER[: 2 * MIN_PART_SIZE])
    reopened = S3BlobStore(location, tmp_path / "other-spool")
    await reopened.open()
    assert len(await reopened.uploads()) == 1
    await reopened.close()
    # The same upload a day on: its owner is gone.
    monkeypatch.setattr("proxy.store.s3blobs.STALE_UPLOAD_AGE", -60.0)
    await reopened.open()
    assert await reopened.uploads() == []
    await reopened.close()
    await busy.abort()  # finds its upload gone, and says nothing


async def test_a_blob_larger_than_a_production_part(location: S3Location, tmp_path: Path) -> None:
    store = S3BlobStore(location, tmp_path / "spool")
    await store.open()
    try:
        data = os.urandom(2 * PART_SIZE + 12345)
        digest = Digest.of(data)
        writer = await store.writer(digest)
        for start in range(0, len(data), 1 << 20):
            await writer.write(data[start : start + (1 << 20)])
        await writer.commit()
        blob = await store.reader(digest)
        assert blob is not None
        assert blob.size == len(data)
        tail = b"".join([chunk async for chunk in blob.read(PART_SIZE - 10, len(data))])
        assert tail == data[PART_SIZE - 10 :]
    finally:
        await store.close()


async def test_a_presigned_url_reads_the_blob_without_keys(store: S3BlobStore) -> None:
    """Signed with SigV4: the gateway refuses the SigV2 URLs botocore makes by default."""
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER)
    await writer.commit()
    url = await store.presigned_url(digest)
    assert "X-Amz-Signature=" in url
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=100-199"}) as answer:
            assert answer.status == 206
            assert await answer.read() == LAYER[100:200]
        async with session.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")) as forged:
            assert forged.status == 403


async def test_an_outage_of_the_gateway_fails_calls_and_they_work_again_after(
    store: S3BlobStore, rgw: CephCluster
) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER)
    await writer.commit()
    rgw.rgw.kill()
    try:
        with pytest.raises(StoreUnavailable):
            await store.stat(digest)
        assert store.watch.unreachable is not None
        # Known to be out, the store fails calls at once rather than retrying each.
        with pytest.raises(StoreUnavailable, match="out of reach"):
            await store.stat(digest)
    finally:
        rgw.rgw.start()
    # The readiness probe always asks, and so finds it back.
    await store.check()
    assert store.watch.unreachable is None
    assert await store.size(digest) == len(LAYER)


async def read_all(reader: BlobReader | None) -> bytes:
    assert reader is not None
    try:
        return b"".join([chunk async for chunk in reader.read(0, len(LAYER))])
    finally:
        await reader.close()


async def test_a_follower_writer_verifies_and_keeps_its_spool_but_uploads_nothing(
    store: S3BlobStore, tmp_path: Path
) -> None:
    assert store.shared
    digest = Digest.of(LAYER)
    writer = await store.follower_writer(digest)
    await writer.write(LAYER[: 3 * MIN_PART_SIZE])
    await writer.write(LAYER[3 * MIN_PART_SIZE :])
    await writer.commit()
    assert await store.uploads() == []
    assert await keys(store) == []  # the owner's upload is the one copy
    assert await read_all(await writer.reader()) == LAYER  # from the spool
    # Once the owner's object is there and the spool gone, readers go on to the object.
    owner = await store.writer(digest)
    await owner.write(LAYER)
    await owner.commit()
    await writer.abort()
    assert list((tmp_path / "spool").iterdir()) == []
    assert await read_all(await writer.reader()) == LAYER


async def test_a_follower_writer_refuses_bytes_that_do_not_match(store: S3BlobStore) -> None:
    writer = await store.follower_writer(Digest.of(LAYER))
    await writer.write(LAYER[:-1] + b"!")
    with pytest.raises(DigestMismatch):
        await writer.commit()
    assert await writer.reader() is None
