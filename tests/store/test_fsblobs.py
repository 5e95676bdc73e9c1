"""What only the file store promises, beyond the conformance suite: where its files are, and
the local files it offers for sendfile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.oci.digest import Digest
from proxy.store import LocalFile
from proxy.store.fsblobs import SMALL_BLOB, FsBlobStore
from tests.store.blobstores import CONFIG, LAYER, files_under, put

LARGE = os.urandom(SMALL_BLOB + 4096)  # read as spans of its file, not whole


@pytest.fixture
async def store(tmp_path: Path) -> FsBlobStore:
    opened = FsBlobStore(tmp_path)
    await opened.open()
    return opened


def span_bytes(local: LocalFile, offset: int, count: int) -> bytes:
    span = local.span(offset, count)
    assert (span.offset, span.count) == (offset, count)
    return os.pread(span.file.fileno(), span.count, span.offset)


async def test_a_stored_blob_is_one_file_at_its_path(store: FsBlobStore, tmp_path: Path) -> None:
    digest = await put(store, LAYER)
    assert files_under(tmp_path) == [store.path(digest)]
    assert await asyncio.to_thread(store.path(digest).read_bytes) == LAYER


async def test_reopening_removes_the_files_of_interrupted_writes(
    store: FsBlobStore, tmp_path: Path
) -> None:
    kept = await put(store, CONFIG)
    interrupted = await store.writer(Digest.of(LAYER))
    await interrupted.write(LAYER[:500])
    reopened = FsBlobStore(tmp_path)
    await reopened.open()
    assert files_under(tmp_path) == [reopened.path(kept)]
    await interrupted.abort()
    assert files_under(tmp_path) == [reopened.path(kept)]


async def test_opened_beside_a_writer_without_cleaning_leaves_its_write_alone(
    store: FsBlobStore, tmp_path: Path
) -> None:
    writing = await store.writer(Digest.of(LAYER))
    await writing.write(LAYER[:500])
    beside = FsBlobStore(tmp_path)
    await beside.open(clean=False)
    await writing.write(LAYER[500:])
    await writing.commit()
    assert await beside.size(Digest.of(LAYER)) == len(LAYER)


async def test_readers_offer_spans_of_their_file(store: FsBlobStore) -> None:
    digest = Digest.of(LARGE)
    writer = await store.writer(digest)
    await writer.write(LARGE[:4000])
    follower = await writer.reader()
    assert isinstance(follower, LocalFile)
    assert await asyncio.to_thread(span_bytes, follower, 1000, 3000) == LARGE[1000:4000]
    await writer.write(LARGE[4000:])
    await writer.commit()
    assert await asyncio.to_thread(span_bytes, follower, 0, len(LARGE)) == LARGE
    await follower.close()
    stored = await store.reader(digest)
    assert isinstance(stored, LocalFile)
    assert await asyncio.to_thread(span_bytes, stored, 5, 10) == LARGE[5:15]
    await stored.close()


@pytest.mark.parametrize("data", [LAYER, LARGE], ids=["small", "large"])
async def test_an_open_blob_stays_readable_after_it_is_deleted(
    store: FsBlobStore, data: bytes
) -> None:
    """Eviction passes pinned blobs over; if one goes anyway, its readers are not cut off."""
    digest = await put(store, data)
    blob = await store.reader(digest)
    assert blob is not None
    assert await store.delete(digest) is True
    assert b"".join([chunk async for chunk in blob.read(0, len(data))]) == data
    await blob.close()


async def test_a_small_blob_is_read_whole_when_opened(store: FsBlobStore) -> None:
    """No file stays open for it, so nothing is left to close in a thread or to sendfile."""
    digest = await put(store, LAYER)
    blob = await store.reader(digest)
    assert blob is not None
    assert not isinstance(blob, LocalFile)
    assert blob.size == len(LAYER) <= SMALL_BLOB
    assert [chunk async for chunk in blob.read(10, 20)] == [LAYER[10:20]]
    await blob.close()


# --- paths ----------------------------------------------------------------------------

digest_texts = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256:{}".format),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map("sha512:{}".format),
)


async def test_paths_stay_inside_the_store(store: FsBlobStore, tmp_path: Path) -> None:
    root = await asyncio.to_thread(tmp_path.resolve)
    seen: dict[Path, Digest] = {}

    @settings(max_examples=200)
    @given(digest_texts)
    def check(text: str) -> None:
        digest = Digest.parse(text)
        path = store.path(digest).resolve()
        assert path.is_relative_to(root)
        assert path != root
        # One file per digest.
        assert seen.setdefault(path, digest) == digest

    check()


async def test_path_of_a_stored_blob_is_stable(store: FsBlobStore) -> None:
    digest = await put(store, CONFIG)
    assert store.path(digest) == store.path(Digest.parse(str(digest)))


async def test_a_torn_small_blob_is_removed_when_opened_never_read(store: FsBlobStore) -> None:
    """Small blobs are put in place without an fsync: a crash may leave one's length in zeros."""
    digest = await put(store, LAYER)
    await asyncio.to_thread(store.path(digest).write_bytes, bytes(len(LAYER)))
    assert await store.size(digest) == len(LAYER)  # a size alone tells nothing torn apart
    assert await store.reader(digest) is None
    assert await store.size(digest) is None


async def test_an_empty_file_is_no_stored_blob_but_the_empty_one(store: FsBlobStore) -> None:
    """Or nothing at all of it: only the empty blob's file may be empty."""
    digest = await put(store, LAYER)
    await asyncio.to_thread(store.path(digest).write_bytes, b"")
    assert await store.stat(digest) is None
    empty = await put(store, b"")
    assert await store.size(empty) == 0


async def test_a_blob_deleted_while_the_store_is_measured_is_not_counted(
    store: FsBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, gone = await put(store, LAYER), await put(store, CONFIG)
    loop = asyncio.get_running_loop()
    walk = store._measure
    walks = 0

    def walk_then_delete() -> int:
        nonlocal walks
        walks += 1
        total = walk()
        if walks == 1:  # after the walk counted it, before its total is kept
            asyncio.run_coroutine_threadsafe(store.delete(gone), loop).result()
        return total

    monkeypatch.setattr(store, "_measure", walk_then_delete)
    await store.remeasure()
    assert (walks, await store.total_size()) == (2, len(LAYER))
    assert await store.stat(kept) is not None
