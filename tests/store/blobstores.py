"""The blob stores the conformance suite runs on, its fixtures and its helpers: a new backend
only adds an entry to ``IMPLEMENTATIONS``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from proxy.oci.digest import Digest
from proxy.store import BlobReader, BlobStore
from proxy.store.fsblobs import FsBlobStore
from proxy.store.s3blobs import S3BlobStore
from proxy.store.s3calls import S3Location
from proxy.store.tier import LocalTier
from proxy.store.tiered import TieredBlobStore
from tests.store.memblobs import MemoryBlobStore
from tests.support.ceph import MIN_PART_SIZE, CephCluster


@dataclass(frozen=True)
class Implementation:
    open: Callable[[Path], Awaitable[BlobStore]]
    # Whatever the backend holds that no stored blob accounts for (temporary files,
    # unfinished uploads): after a commit, an abort or a restart there must be none.
    leftovers: Callable[[BlobStore, Path], Awaitable[list[str]]]
    close: Callable[[BlobStore], Awaitable[None]] | None = None


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def open_fs(root: Path) -> BlobStore:
    store = FsBlobStore(root)
    await store.open()
    return store


async def fs_leftovers(store: BlobStore, root: Path) -> list[str]:
    assert isinstance(store, FsBlobStore)
    stored = {store.path(digest) async for digest in store.digests()}
    return [str(path) for path in files_under(root) if path not in stored]


async def open_memory(root: Path) -> BlobStore:
    return MemoryBlobStore(root)


async def memory_leftovers(store: BlobStore, root: Path) -> list[str]:
    assert isinstance(store, MemoryBlobStore)
    return [repr(writer) for writer in store.bucket.pending]


S3_BUCKET = "conformance"


async def open_bucket(cluster: CephCluster, bucket: str, root: Path) -> S3BlobStore:
    """An S3 store in ``bucket`` under a prefix named after ``root``, where its spool is: the
    same directory opens the same blobs again."""
    endpoint = cluster.endpoint
    prefix = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    location = S3Location(
        bucket,
        endpoint.url,
        endpoint.region,
        f"{prefix}/",
        endpoint.access_key,
        endpoint.secret_key,
    )
    # Parts of the smallest size the gateway takes: the tests' blobs go up in several.
    store = S3BlobStore(location, root / "spool", part_size=MIN_PART_SIZE)
    await store.open()
    return store


def s3_implementation(request: pytest.FixtureRequest) -> Implementation:
    """One bucket for the session; each test's blobs under a prefix of its own, named after
    its directory, so that reopening the directory reopens the same blobs."""
    cluster: CephCluster = request.getfixturevalue("rgw")
    cluster.create_bucket(S3_BUCKET)

    async def open_s3(root: Path) -> BlobStore:
        return await open_bucket(cluster, S3_BUCKET, root)

    async def close_s3(store: BlobStore) -> None:
        assert isinstance(store, S3BlobStore)
        await store.close()

    return Implementation(open_s3, s3_leftovers, close_s3)


async def s3_leftovers(store: BlobStore, root: Path) -> list[str]:
    assert isinstance(store, S3BlobStore)
    uploads = [f"upload of {key}" for key, _, _ in await store.uploads()]
    return uploads + [str(path) for path in files_under(root / "spool")]


# Roomy: the bound's own behaviour is tested in test_tiered.py.
TIER_BYTES = 64 * 1024 * 1024


def tiered_implementation(request: pytest.FixtureRequest) -> Implementation:
    """The S3 store with a local tier in front, as ``storage.local_tier`` makes it: the tier
    under the same directory, so that reopening it reopens the same tier."""
    bucket = s3_implementation(request)

    async def open_tiered(root: Path) -> BlobStore:
        tier = LocalTier(root / "tier", TIER_BYTES)
        await tier.open()
        return TieredBlobStore(await bucket.open(root), tier)

    async def close_tiered(store: BlobStore) -> None:
        assert isinstance(store, TieredBlobStore)
        assert bucket.close is not None
        await bucket.close(store.store)

    async def tiered_leftovers(store: BlobStore, root: Path) -> list[str]:
        assert isinstance(store, TieredBlobStore)
        in_tier = files_under(root / "tier" / "tmp")
        return await s3_leftovers(store.store, root) + [str(path) for path in in_tier]

    return Implementation(open_tiered, tiered_leftovers, close_tiered)


IMPLEMENTATIONS = [
    pytest.param(lambda _: Implementation(open_fs, fs_leftovers), id="fs"),
    pytest.param(lambda _: Implementation(open_memory, memory_leftovers), id="memory"),
    pytest.param(s3_implementation, id="s3"),
    pytest.param(tiered_implementation, id="tiered"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def implementation(request: pytest.FixtureRequest) -> AsyncIterator[Implementation]:
    chosen: Implementation = request.param(request)
    opened: list[BlobStore] = []

    async def open_and_keep(root: Path) -> BlobStore:
        opened.append(await chosen.open(root))
        return opened[-1]

    yield replace(chosen, open=open_and_keep)
    if chosen.close is not None:
        for store in opened:
            await chosen.close(store)


@pytest.fixture
async def store(implementation: Implementation, tmp_path: Path) -> BlobStore:
    return await implementation.open(tmp_path)


Leftovers = Callable[[BlobStore], Awaitable[list[str]]]


@pytest.fixture
def leftovers(implementation: Implementation, tmp_path: Path) -> Leftovers:
    return lambda store: implementation.leftovers(store, tmp_path)


async def put(store: BlobStore, data: bytes, chunk: int = 7) -> Digest:
    digest = Digest.of(data)
    writer = await store.writer(digest)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.commit()
    return digest


async def read(reader: BlobReader, offset: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in reader.read(offset, end)])


async def stored_bytes(store: BlobStore, digest: Digest) -> bytes | None:
    blob = await store.reader(digest)
    if blob is None:
        return None
    try:
        return await read(blob, 0, blob.size)
    finally:
        await blob.close()


async def stored_digests(store: BlobStore) -> set[Digest]:
    return {digest async for digest in store.digests()}


LAYER = b"layer bytes " * 1000
CONFIG = b'{"architecture":"amd64","os":"linux"}'
