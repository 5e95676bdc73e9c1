"""The one conformance suite for ``BlobStore`` and its ``BlobWriter``.

Every implementation runs every test, through the interfaces alone: a new backend only adds
an entry to ``IMPLEMENTATIONS``, a factory that opens the store kept under a directory and
a way to list what it left behind. Opening the same directory again is how a restart looks
to the store. What only the file store promises (paths, files on disk, sendfile spans) is
tested in ``test_fsblobs.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from proxy.oci.digest import Digest
from proxy.store import BlobReader, BlobStore, BlobWriter, DigestMismatch
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


def s3_implementation(request: pytest.FixtureRequest) -> Implementation:
    """One bucket for the session; each test's blobs under a prefix of its own, named after
    its directory, so that reopening the directory reopens the same blobs."""
    cluster: CephCluster = request.getfixturevalue("rgw")
    cluster.create_bucket(S3_BUCKET)
    endpoint = cluster.endpoint

    async def open_s3(root: Path) -> BlobStore:
        prefix = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        location = S3Location(
            S3_BUCKET,
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


# --- writing --------------------------------------------------------------------------


async def test_commit_makes_the_blob_visible(store: BlobStore) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:100])
    await writer.write(LAYER[100:])
    assert writer.written == len(LAYER)
    assert await store.size(digest) is None
    assert await store.reader(digest) is None
    await writer.commit()
    assert await store.size(digest) == len(LAYER)
    assert await stored_bytes(store, digest) == LAYER


async def test_empty_blob(store: BlobStore) -> None:
    digest = await put(store, b"")
    assert await store.size(digest) == 0
    assert await stored_bytes(store, digest) == b""


async def test_sha512_blob(store: BlobStore) -> None:
    digest = Digest.of(CONFIG, "sha512")
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    await writer.commit()
    assert await store.size(digest) == len(CONFIG)
    assert await stored_bytes(store, digest) == CONFIG
    assert await store.size(Digest.of(CONFIG)) is None


async def test_nothing_is_visible_before_commit(store: BlobStore) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    assert await store.size(digest) is None
    assert await store.stat(digest) is None
    assert await store.reader(digest) is None
    assert await stored_digests(store) == set()
    assert await store.total_size() == 0
    await writer.abort()


async def test_wrong_bytes_are_refused_and_leave_nothing(
    store: BlobStore, leftovers: Leftovers
) -> None:
    claimed = Digest.of(CONFIG)
    writer = await store.writer(claimed)
    await writer.write(b"something else")
    with pytest.raises(DigestMismatch) as caught:
        await writer.commit()
    assert caught.value.expected == claimed
    assert caught.value.actual == str(Digest.of(b"something else"))
    assert caught.value.size == len(b"something else")
    assert await store.size(claimed) is None
    assert await store.reader(claimed) is None
    assert await store.total_size() == 0
    assert await stored_digests(store) == set()
    assert await leftovers(store) == []


async def test_truncated_bytes_are_refused(store: BlobStore, leftovers: Leftovers) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:-1])
    with pytest.raises(DigestMismatch):
        await writer.commit()
    assert await store.size(digest) is None
    assert await leftovers(store) == []


async def test_a_refused_write_does_not_harm_the_stored_blob(store: BlobStore) -> None:
    digest = await put(store, CONFIG)
    writer = await store.writer(digest)
    await writer.write(b"forged")
    with pytest.raises(DigestMismatch):
        await writer.commit()
    assert await store.size(digest) == len(CONFIG)
    assert await stored_bytes(store, digest) == CONFIG
    assert await store.total_size() == len(CONFIG)


@pytest.mark.parametrize("written", [b"", b"partial"])
async def test_abort_leaves_nothing(store: BlobStore, leftovers: Leftovers, written: bytes) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(written)
    await writer.abort()
    assert await store.size(digest) is None
    assert await store.total_size() == 0
    assert await leftovers(store) == []


async def test_abort_after_commit_keeps_the_blob(store: BlobStore, leftovers: Leftovers) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    await writer.commit()
    await writer.abort()  # e.g. from a cleanup path that always aborts
    assert await store.size(digest) == len(CONFIG)
    assert await leftovers(store) == []


async def test_writers_for_the_same_digest_do_not_share_bytes(store: BlobStore) -> None:
    digest = Digest.of(CONFIG)
    first, second = await store.writer(digest), await store.writer(digest)
    await first.write(CONFIG)
    await second.write(b"junk")
    first_reader, second_reader = await first.reader(), await second.reader()
    assert first_reader is not None
    assert second_reader is not None
    assert await read(first_reader, 0, first.written) == CONFIG
    assert await read(second_reader, 0, second.written) == b"junk"
    await first_reader.close()
    await second_reader.close()
    with pytest.raises(DigestMismatch):
        await second.commit()
    await first.commit()
    assert await stored_bytes(store, digest) == CONFIG


# --- reading --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "end"),
    [(0, len(LAYER)), (0, 1), (1, 2), (5000, 5000), (4321, 9876), (len(LAYER) - 1, len(LAYER))],
)
async def test_a_stored_blob_reads_from_any_offset(store: BlobStore, offset: int, end: int) -> None:
    digest = await put(store, LAYER, chunk=4096)
    blob = await store.reader(digest)
    assert blob is not None
    try:
        assert blob.size == len(LAYER)
        assert await read(blob, offset, end) == LAYER[offset:end]
        # Reading again, or out of order, is fine.
        assert await read(blob, 0, 10) == LAYER[:10]
    finally:
        await blob.close()


async def test_stat_gives_the_size_and_when_it_was_stored(store: BlobStore) -> None:
    before = time.time()
    digest = await put(store, CONFIG)
    info = await store.stat(digest)
    assert info is not None
    assert info.size == len(CONFIG)
    # File times are coarser than the clock: allow them a little slack.
    assert before - 1 <= info.modified <= time.time() + 1
    assert await store.stat(Digest.of(LAYER)) is None


async def test_a_follower_reads_the_bytes_written_so_far(store: BlobStore) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:1000])
    follower = await writer.reader()
    assert follower is not None
    try:
        assert await read(follower, 0, writer.written) == LAYER[:1000]
        await writer.write(LAYER[1000:5000])
        await writer.write(LAYER[5000:])
        assert writer.written == len(LAYER)
        assert await read(follower, 1000, writer.written) == LAYER[1000:]
        await writer.commit()
        # What the follower opened stays readable through the commit.
        assert await read(follower, 0, len(LAYER)) == LAYER
    finally:
        await follower.close()
    assert await stored_bytes(store, digest) == LAYER


async def test_a_follower_that_comes_after_the_commit_reads_the_stored_blob(
    store: BlobStore,
) -> None:
    writer = await store.writer(Digest.of(LAYER))
    await writer.write(LAYER)
    await writer.commit()
    follower = await writer.reader()
    assert follower is not None
    try:
        assert await read(follower, 0, len(LAYER)) == LAYER
    finally:
        await follower.close()


async def test_a_follower_that_comes_after_an_abort_finds_nothing(store: BlobStore) -> None:
    writer = await store.writer(Digest.of(LAYER))
    await writer.write(LAYER[:100])
    await writer.abort()
    assert await writer.reader() is None


async def test_detach_hands_over_the_hash_and_keeps_the_bytes_readable(
    store: BlobStore, leftovers: Leftovers
) -> None:
    """A full disk: the writer stops, the hash goes on elsewhere, followers keep reading."""
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:3000])
    follower = await writer.reader()
    assert follower is not None
    hasher = await writer.detach()
    hasher.update(LAYER[3000:])
    assert hasher.hexdigest() == digest.hex
    late = await writer.reader()
    assert late is not None
    try:
        assert await read(follower, 0, 3000) == LAYER[:3000]
        assert await read(late, 1000, 3000) == LAYER[1000:3000]
    finally:
        await follower.close()
        await late.close()
    await writer.abort()
    assert await store.size(digest) is None
    assert await leftovers(store) == []


# --- accounting -----------------------------------------------------------------------


async def test_total_size_tracks_commits_and_deletes(store: BlobStore) -> None:
    assert await store.total_size() == 0
    layer = await put(store, LAYER)
    config = await put(store, CONFIG)
    assert await store.total_size() == len(LAYER) + len(CONFIG)
    await put(store, CONFIG)  # the same digest again counts once
    assert await store.total_size() == len(LAYER) + len(CONFIG)
    assert await store.delete(layer) is True
    assert await store.total_size() == len(CONFIG)
    assert await store.size(layer) is None
    assert await store.delete(layer) is False
    assert await store.total_size() == len(CONFIG)
    assert await store.delete(config) is True
    assert await store.total_size() == 0


async def test_concurrent_commits_of_one_digest_count_once(store: BlobStore) -> None:
    """Two processes (or two upstreams) may fetch the same blob at once."""
    for _ in range(10):
        writers: list[BlobWriter] = []
        for _ in range(4):
            writer = await store.writer(Digest.of(LAYER))
            await writer.write(LAYER)
            writers.append(writer)
        await asyncio.gather(*(writer.commit() for writer in writers))
        assert await store.total_size() == len(LAYER)
        assert await store.delete(Digest.of(LAYER)) is True
        assert await store.total_size() == 0


async def test_digests_lists_what_is_stored(store: BlobStore) -> None:
    assert await stored_digests(store) == set()
    layer, config = await put(store, LAYER), await put(store, CONFIG)
    empty = await put(store, b"")
    assert await stored_digests(store) == {layer, config, empty}
    await store.delete(config)
    assert await stored_digests(store) == {layer, empty}


# --- reopening ------------------------------------------------------------------------


async def test_reopening_keeps_blobs_and_recomputes_the_total(
    store: BlobStore, implementation: Implementation, tmp_path: Path
) -> None:
    layer, config = await put(store, LAYER), await put(store, CONFIG)
    await store.delete(config)
    reopened = await implementation.open(tmp_path)
    assert await reopened.total_size() == len(LAYER)
    assert await reopened.size(layer) == len(LAYER)
    assert await reopened.size(config) is None
    assert await stored_digests(reopened) == {layer}
    assert await stored_bytes(reopened, layer) == LAYER


async def test_remeasure_counts_what_another_handle_stored_and_deleted(
    store: BlobStore, implementation: Implementation, tmp_path: Path
) -> None:
    """As a server's store after a command run beside it changed the same directory."""
    layer = await put(store, LAYER)
    other = await implementation.open(tmp_path)
    await put(other, CONFIG)
    assert await other.delete(layer) is True
    await store.remeasure()
    assert await store.total_size() == len(CONFIG)
    assert await store.delete(layer) is False
    assert await store.total_size() == len(CONFIG)


async def test_reopening_removes_interrupted_writes(
    store: BlobStore, implementation: Implementation, tmp_path: Path, leftovers: Leftovers
) -> None:
    kept = await put(store, CONFIG)
    interrupted = await store.writer(Digest.of(LAYER))
    await interrupted.write(LAYER[:500])
    reopened = await implementation.open(tmp_path)
    assert await leftovers(reopened) == []
    assert await stored_digests(reopened) == {kept}
    assert await reopened.total_size() == len(CONFIG)
    assert await reopened.size(Digest.of(LAYER)) is None
    await interrupted.abort()  # the process that owned it is gone; its cleanup finds nothing
    assert await leftovers(reopened) == []
    assert await stored_digests(reopened) == {kept}
