"""What only the S3 store with a local tier in front promises, beyond the conformance suite:
which reads the tier answers, how it fills (whole reads, the writer's spool, followed
blobs), and its own LRU bound."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from proxy.oci.digest import Digest
from proxy.store import BlobStore, LocalFile, StoredBlob
from proxy.store.s3blobs import S3BlobStore
from proxy.store.spool import Spool
from proxy.store.tier import LocalTier
from proxy.store.tiered import TieredBlobStore
from tests.store.blobstores import open_bucket
from tests.support.ceph import CephCluster

BUCKET = "tiered"
BLOB = 10_000
BLOBS = [bytes([n]) * BLOB + b"%d" % n for n in range(4)]
SIZE = len(BLOBS[0])
# Read from the bucket in several chunks (the store reads 256 KiB at a time).
LARGE = b"large blob " * 60_000


@pytest.fixture
async def bucket(rgw: CephCluster, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    rgw.create_bucket(BUCKET)
    opened = await open_bucket(rgw, BUCKET, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
def reads() -> Counter[str]:
    return Counter()


async def tiered(
    bucket: S3BlobStore, root: Path, reads: Counter[str], max_bytes: int = 4 * len(LARGE)
) -> TieredBlobStore:
    tier = LocalTier(root / "tier", max_bytes)
    await tier.open()
    return TieredBlobStore(bucket, tier, lambda result: reads.update([result]))


@pytest.fixture
async def store(bucket: S3BlobStore, tmp_path: Path, reads: Counter[str]) -> TieredBlobStore:
    return await tiered(bucket, tmp_path, reads)


async def put(store: BlobStore, data: bytes) -> Digest:
    digest = Digest.of(data)
    writer = await store.writer(digest)
    await writer.write(data)
    await writer.commit()
    return digest


async def opened(store: BlobStore, digest: Digest) -> StoredBlob:
    blob = await store.reader(digest)
    assert blob is not None
    return blob


async def read(store: BlobStore, digest: Digest, offset: int = 0, end: int | None = None) -> bytes:
    blob = await opened(store, digest)
    try:
        end = blob.size if end is None else end
        return b"".join([chunk async for chunk in blob.read(offset, end)])
    finally:
        await blob.close()


def in_tier(store: TieredBlobStore) -> set[Digest]:
    return {digest for digest in map(Digest.of, BLOBS) if store.tier.path(digest).exists()}


def tier_tmp(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tier" / "tmp").iterdir())


async def test_a_miss_read_whole_fills_the_tier_and_the_next_read_is_from_the_tier(
    bucket: S3BlobStore, store: TieredBlobStore, reads: Counter[str]
) -> None:
    digest = await put(bucket, BLOBS[0])  # stored by another replica: not in this one's tier
    first = await opened(store, digest)
    assert not isinstance(first, LocalFile)
    assert b"".join([chunk async for chunk in first.read(0, SIZE)]) == BLOBS[0]
    await first.close()
    assert reads == {"miss": 1}
    assert in_tier(store) == {digest}
    second = await opened(store, digest)
    try:
        # A blob this small is read whole as the tier opens it (fsblobs.SMALL_BLOB).
        assert b"".join([chunk async for chunk in second.read(100, 300)]) == BLOBS[0][100:300]
    finally:
        await second.close()
    assert reads == {"miss": 1, "hit": 1}
    assert await store.stat(Digest.of(BLOBS[1])) is None
    assert await store.reader(Digest.of(BLOBS[1])) is None
    assert reads == {"miss": 1, "hit": 1}  # a blob stored nowhere is neither


@pytest.mark.parametrize(("offset", "end"), [(0, SIZE - 1), (1, SIZE), (500, 600)])
async def test_a_partial_read_fills_nothing(
    bucket: S3BlobStore, store: TieredBlobStore, tmp_path: Path, offset: int, end: int
) -> None:
    digest = await put(bucket, BLOBS[0])
    assert await read(store, digest, offset, end) == BLOBS[0][offset:end]
    assert in_tier(store) == set()
    assert tier_tmp(tmp_path) == []


async def test_a_whole_read_given_up_half_way_fills_nothing(
    bucket: S3BlobStore, store: TieredBlobStore, tmp_path: Path
) -> None:
    digest = await put(bucket, LARGE)
    blob = await opened(store, digest)
    chunks = blob.read(0, len(LARGE))
    await anext(chunks)
    assert isinstance(chunks, AsyncGenerator)
    await chunks.aclose()  # the client went away
    await blob.close()
    assert not store.tier.path(digest).exists()
    assert tier_tmp(tmp_path) == []
    assert await read(store, digest) == LARGE
    assert store.tier.path(digest).exists()


async def test_one_fill_per_digest_at_a_time(bucket: S3BlobStore, store: TieredBlobStore) -> None:
    digest = await put(bucket, LARGE)
    first = await opened(store, digest)
    chunks = first.read(0, len(LARGE))
    head = await anext(chunks)
    # Read whole meanwhile, and not copied: the first read is filling the tier.
    assert await read(store, digest) == LARGE
    assert not store.tier.path(digest).exists()
    assert head + b"".join([chunk async for chunk in chunks]) == LARGE
    await first.close()
    assert store.tier.path(digest).exists()


async def test_a_stored_blob_is_linked_into_the_tier_from_the_spool(
    store: TieredBlobStore, tmp_path: Path, reads: Counter[str]
) -> None:
    digest = await put(store, BLOBS[0])
    assert in_tier(store) == {digest}
    assert list((tmp_path / "spool").iterdir()) == []
    assert tier_tmp(tmp_path) == []  # linked in, not written through a tier writer
    assert await read(store, digest) == BLOBS[0]
    assert reads == {"hit": 1}


async def test_a_followed_blob_goes_to_the_tier_only(
    store: TieredBlobStore, bucket: S3BlobStore, reads: Counter[str]
) -> None:
    digest = Digest.of(BLOBS[0])
    writer = await store.follower_writer(digest)
    await writer.write(BLOBS[0])
    follower = await writer.reader()
    assert follower is not None
    await writer.commit()
    assert b"".join([chunk async for chunk in follower.read(0, SIZE)]) == BLOBS[0]
    await follower.close()
    assert await bucket.stat(digest) is None  # the owning replica stores it there
    assert await store.stat(digest) is None
    assert await read(store, digest) == BLOBS[0]
    assert reads == {"hit": 1}


async def test_the_least_recently_read_blob_leaves_the_tier_when_it_is_over(
    bucket: S3BlobStore, tmp_path: Path, reads: Counter[str]
) -> None:
    store = await tiered(bucket, tmp_path, reads, max_bytes=2 * SIZE + SIZE // 2)
    first, second, third, fourth = [await put(store, data) for data in BLOBS]
    # Each blob stored landed in the tier, pushing out the least recent one.
    assert in_tier(store) == {third, fourth}
    assert store.tier.held == 2 * SIZE
    assert await read(store, third) == BLOBS[2]  # now the most recent
    assert await read(store, first) == BLOBS[0]  # a miss, filled: fourth goes
    assert in_tier(store) == {first, third}
    assert await store.total_size() == 4 * SIZE  # the bucket keeps everything
    assert await read(store, fourth) == BLOBS[3]
    assert in_tier(store) == {first, fourth}
    assert reads == {"hit": 1, "miss": 2}

    # A restart rebuilds the order from the files' times: first is the older one.
    reopened = await tiered(bucket, tmp_path, reads, max_bytes=2 * SIZE + SIZE // 2)
    assert reopened.tier.held == 2 * SIZE
    assert await read(reopened, second) == BLOBS[1]
    assert in_tier(reopened) == {fourth, second}


async def test_a_blob_larger_than_the_tier_is_not_kept(
    bucket: S3BlobStore, tmp_path: Path, reads: Counter[str]
) -> None:
    store = await tiered(bucket, tmp_path, reads, max_bytes=SIZE - 1)
    digest = await put(store, BLOBS[0])
    assert await read(store, digest) == BLOBS[0]
    assert in_tier(store) == set()
    assert tier_tmp(tmp_path) == []
    assert reads == {"miss": 1}


async def test_a_full_tier_disk_fails_the_copy_not_the_read(
    bucket: S3BlobStore, store: TieredBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = await put(bucket, LARGE)

    def full_disk(spool: Spool, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # Internal seam: the file a tier writer spools to (the bucket's reads use none).
    monkeypatch.setattr(Spool, "write_now", full_disk)
    assert await read(store, digest) == LARGE
    assert not store.tier.path(digest).exists()
    assert tier_tmp(tmp_path) == []
