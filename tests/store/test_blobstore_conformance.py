"""The one conformance suite for ``BlobStore`` and its ``BlobWriter``.

Every implementation runs every test: a new backend only adds an entry to
``IMPLEMENTATIONS``, a factory that opens the store kept under a directory. Opening the
same directory again is how a restart looks to the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.oci.digest import Digest
from proxy.store import BlobStore, BlobWriter, DigestMismatch
from proxy.store.fsblobs import FsBlobStore

OpenStore = Callable[[Path], Awaitable[BlobStore]]


async def open_fs(root: Path) -> BlobStore:
    store = FsBlobStore(root)
    await store.open()
    return store


IMPLEMENTATIONS = [pytest.param(open_fs, id="fs")]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_store(request: pytest.FixtureRequest) -> OpenStore:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def store(open_store: OpenStore, tmp_path: Path) -> BlobStore:
    return await open_store(tmp_path)


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def read(path: Path) -> bytes:
    return path.read_bytes()


async def put(store: BlobStore, data: bytes, chunk: int = 7) -> Digest:
    digest = Digest.of(data)
    writer = await store.writer(digest)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.commit()
    return digest


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
    await writer.commit()
    assert await store.size(digest) == len(LAYER)
    assert await asyncio.to_thread(read, store.path(digest)) == LAYER


async def test_empty_blob(store: BlobStore) -> None:
    digest = await put(store, b"")
    assert await store.size(digest) == 0
    assert await asyncio.to_thread(read, store.path(digest)) == b""


async def test_sha512_blob(store: BlobStore) -> None:
    digest = Digest.of(CONFIG, "sha512")
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    await writer.commit()
    assert await store.size(digest) == len(CONFIG)
    assert await store.size(Digest.of(CONFIG)) is None


async def test_nothing_is_visible_before_commit(store: BlobStore) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    assert await store.size(digest) is None
    assert await stored_digests(store) == set()
    assert await store.total_size() == 0
    await writer.abort()


async def test_wrong_bytes_are_refused_and_leave_no_file(store: BlobStore, tmp_path: Path) -> None:
    claimed = Digest.of(CONFIG)
    writer = await store.writer(claimed)
    await writer.write(b"something else")
    with pytest.raises(DigestMismatch) as caught:
        await writer.commit()
    assert caught.value.expected == claimed
    assert caught.value.actual == str(Digest.of(b"something else"))
    assert caught.value.size == len(b"something else")
    assert await store.size(claimed) is None
    assert await store.total_size() == 0
    assert await stored_digests(store) == set()
    assert files_under(tmp_path) == []


async def test_truncated_bytes_are_refused(store: BlobStore, tmp_path: Path) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:-1])
    with pytest.raises(DigestMismatch):
        await writer.commit()
    assert files_under(tmp_path) == []


async def test_a_refused_write_does_not_harm_the_stored_blob(store: BlobStore) -> None:
    digest = await put(store, CONFIG)
    writer = await store.writer(digest)
    await writer.write(b"forged")
    with pytest.raises(DigestMismatch):
        await writer.commit()
    assert await store.size(digest) == len(CONFIG)
    assert await asyncio.to_thread(read, store.path(digest)) == CONFIG
    assert await store.total_size() == len(CONFIG)


@pytest.mark.parametrize("written", [b"", b"partial"])
async def test_abort_leaves_nothing(store: BlobStore, tmp_path: Path, written: bytes) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(written)
    await writer.abort()
    assert await store.size(digest) is None
    assert await store.total_size() == 0
    assert files_under(tmp_path) == []


async def test_abort_after_commit_keeps_the_blob(store: BlobStore) -> None:
    digest = Digest.of(CONFIG)
    writer = await store.writer(digest)
    await writer.write(CONFIG)
    await writer.commit()
    await writer.abort()  # e.g. from a cleanup path that always aborts
    assert await store.size(digest) == len(CONFIG)


async def test_writers_for_the_same_digest_do_not_share_a_file(store: BlobStore) -> None:
    digest = Digest.of(CONFIG)
    first, second = await store.writer(digest), await store.writer(digest)
    assert first.path != second.path
    await first.write(CONFIG)
    await second.write(b"junk")
    with pytest.raises(DigestMismatch):
        await second.commit()
    await first.commit()
    assert await store.size(digest) == len(CONFIG)


async def test_a_follower_reads_the_bytes_written_so_far(store: BlobStore) -> None:
    digest = Digest.of(LAYER)
    writer = await store.writer(digest)
    await writer.write(LAYER[:1000])
    follower = await asyncio.to_thread(writer.path.open, "rb")
    try:
        assert await asyncio.to_thread(follower.read) == LAYER[:1000]
        await writer.write(LAYER[1000:5000])
        await writer.write(LAYER[5000:])
        assert await asyncio.to_thread(follower.read) == LAYER[1000:]
        assert writer.written == len(LAYER)
        await writer.commit()
        # The open file stays readable through the rename into place.
        assert await asyncio.to_thread(follower.read) == b""
    finally:
        follower.close()
    assert await asyncio.to_thread(read, store.path(digest)) == LAYER


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
    store: BlobStore, open_store: OpenStore, tmp_path: Path
) -> None:
    layer, config = await put(store, LAYER), await put(store, CONFIG)
    await store.delete(config)
    reopened = await open_store(tmp_path)
    assert await reopened.total_size() == len(LAYER)
    assert await reopened.size(layer) == len(LAYER)
    assert await reopened.size(config) is None
    assert await stored_digests(reopened) == {layer}


async def test_reopening_removes_interrupted_writes(
    store: BlobStore, open_store: OpenStore, tmp_path: Path
) -> None:
    kept = await put(store, CONFIG)
    interrupted = await store.writer(Digest.of(LAYER))
    await interrupted.write(LAYER[:500])
    reopened = await open_store(tmp_path)
    assert files_under(tmp_path) == [reopened.path(kept)]
    assert await reopened.total_size() == len(CONFIG)
    assert await reopened.size(Digest.of(LAYER)) is None
    await interrupted.abort()  # the process that owned it is gone; its cleanup finds nothing
    assert files_under(tmp_path) == [reopened.path(kept)]


# --- paths ----------------------------------------------------------------------------

digest_texts = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256:{}".format),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map("sha512:{}".format),
)


async def test_paths_stay_inside_the_store(store: BlobStore, tmp_path: Path) -> None:
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


async def test_path_of_a_stored_blob_is_stable(store: BlobStore) -> None:
    digest = await put(store, CONFIG)
    assert store.path(digest) == store.path(Digest.parse(str(digest)))
