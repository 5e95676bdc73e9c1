"""The one conformance suite for ``BlobStore`` and its ``BlobWriter``.

Every implementation runs every test, through the interfaces alone: a new backend only adds
an entry to ``IMPLEMENTATIONS``, a factory that opens the store kept under a directory and
a way to list what it left behind. Opening the same directory again is how a restart looks
to the store. What only the file store promises (paths, files on disk, sendfile spans) is
tested in ``test_fsblobs.py``.
"""

from __future__ import annotations

import time

import pytest

from proxy.oci.digest import Digest
from proxy.store import BlobStore, DigestMismatch
from tests.store import blobstores
from tests.store.blobstores import CONFIG, LAYER, Leftovers, put, read, stored_bytes, stored_digests

# The suite's fixtures, by name in this module, where pytest looks for them.
implementation = blobstores.implementation
store = blobstores.store
leftovers = blobstores.leftovers


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
