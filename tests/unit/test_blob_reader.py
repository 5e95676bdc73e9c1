"""The blob reader: one object for a cached blob and a download, pinned while it is open.

Downloads are driven by hand through the sink a transfer reports to, so that every step
(bytes written, digest checked, disk full) happens exactly when the test says.

A download keeps its latest bytes in memory (a window): a reader keeping up is sent them as
they arrive, before the writer has them; one that fell behind reads the file instead, and
either way gets the same bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache import downloads
from proxy.cache.blobs import BlobCache
from proxy.cache.downloads import Download
from proxy.cache.lru import Pins
from proxy.cache.reader import OpenBlob
from proxy.cache.usage import Usage
from proxy.config import UpstreamConfig
from proxy.errors import UpstreamInvalid, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.model import FileSpan, Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter
from proxy.store.fsblobs import FsBlobStore
from proxy.store.memory import MemoryIndex
from tests.store.memblobs import MemoryBlobStore

TARGET = Target(UpstreamConfig("docker.io", "http://127.0.0.1:9"), "library/app")
LAYER = bytes(range(256)) * 400  # larger than SMALL_BLOB: served as spans of its file
DIGEST = Digest.of(LAYER)
PIN = (Kind.BLOB, DIGEST)


class Joined:
    """Stands in for the downloads under way: every join finds this one."""

    def __init__(self, download: Download) -> None:
        self.download = download

    def active(self, digest: Digest) -> Download:
        return self.download

    async def join(self, target: Target, digest: Digest) -> Download:
        await self.download.wait_started()
        return self.download


class Cache:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.pins = Pins()
        self.usage = Usage(MemoryIndex(), Metrics())
        self.blobs = BlobCache(store, {}, Metrics(), self.usage, self.pins)

    async def put(self, data: bytes) -> Digest:
        writer = await self.store.writer(Digest.of(data))
        await writer.write(data)
        await writer.commit()
        # Cached for TARGET's repository, which may read it (tests/fast/test_cross_repo.py).
        self.usage.learn(Kind.BLOB, Digest.of(data), TARGET.ref)
        return Digest.of(data)

    async def download(self, size: int | None) -> tuple[Download, BlobWriter]:
        """A download the upstream answered, with nothing written yet."""
        download = Download(DIGEST, lambda _: None, TARGET)
        self.blobs.downloads = Joined(download)  # type: ignore[assignment]
        writer = await self.store.writer(DIGEST)
        download.started(size, writer)
        return download, writer


@pytest.fixture
async def cache(tmp_path: Path) -> Cache:
    store = FsBlobStore(tmp_path)
    await store.open()
    return Cache(store)


def span_bytes(span: FileSpan) -> bytes:
    return os.pread(span.file.fileno(), span.count, span.offset)


async def content(pieces: AsyncIterator[bytes | FileSpan], kinds: set[type] | None = None) -> bytes:
    """The bytes of ``pieces``; ``kinds`` collects which kinds of piece came."""
    parts = []
    async for piece in pieces:
        if kinds is not None:
            kinds.add(type(piece))
        parts.append(
            piece if isinstance(piece, bytes) else await asyncio.to_thread(span_bytes, piece)
        )
    return b"".join(parts)


async def write(download: Download, writer: BlobWriter, data: bytes) -> None:
    await writer.write(data)
    download.progress(writer.written)


async def still_waiting(task: asyncio.Task[object]) -> bool:
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


async def test_a_cached_blob_is_one_span_of_its_file(cache: Cache) -> None:
    await cache.put(LAYER)
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        assert (blob.size, blob.hit, blob.source) == (len(LAYER), True, "cache")
        pieces = [piece async for piece in blob.pieces(100, len(LAYER))]
        assert len(pieces) == 1
        assert isinstance(pieces[0], FileSpan)
        assert (pieces[0].offset, pieces[0].count) == (100, len(LAYER) - 100)
        assert await asyncio.to_thread(span_bytes, pieces[0]) == LAYER[100:]


async def test_an_empty_range_is_no_piece(cache: Cache) -> None:
    digest = await cache.put(b"")
    async with cache.blobs.open(TARGET, digest) as blob:
        assert blob.size == 0
        assert [piece async for piece in blob.pieces(0, 0)] == []


async def test_a_store_without_local_files_gives_bytes(tmp_path: Path) -> None:
    cache = Cache(MemoryBlobStore(tmp_path))
    await cache.put(LAYER)
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        pieces = [piece async for piece in blob.pieces(10, 5000)]
    assert all(isinstance(piece, bytes) for piece in pieces)
    assert b"".join(pieces) == LAYER[10:5000]  # type: ignore[arg-type]


async def test_the_blob_is_pinned_while_open_and_released_however_the_block_ends(
    cache: Cache,
) -> None:
    await cache.put(LAYER)
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        assert PIN in cache.pins
        async for _ in blob.pieces(0, blob.size):
            pass
    assert PIN not in cache.pins
    with pytest.raises(ConnectionResetError):
        await send_to_a_client_that_leaves(cache)
    assert PIN not in cache.pins


async def send_to_a_client_that_leaves(cache: Cache) -> None:
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        async for _ in blob.pieces(0, blob.size):
            raise ConnectionResetError("the client went away mid-blob")


async def test_a_failed_lookup_leaves_no_pin(cache: Cache) -> None:
    download = Download(DIGEST, lambda _: None, TARGET)
    cache.blobs.downloads = Joined(download)  # type: ignore[assignment]
    download.finish(UpstreamUnavailable("the upstream is down"))
    with pytest.raises(UpstreamUnavailable):
        async with cache.blobs.open(TARGET, DIGEST):
            raise AssertionError("opened a failed download")
    assert PIN not in cache.pins


async def test_a_download_is_followed_and_its_last_byte_waits_for_the_digest(
    cache: Cache,
) -> None:
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        assert (blob.size, blob.hit, blob.source) == (len(LAYER), False, "upstream")
        assert PIN in cache.pins
        pieces = blob.pieces(0, blob.size)
        await write(download, writer, LAYER[:5000])
        first = await anext(pieces)
        await write(download, writer, LAYER[5000:])
        second = await anext(pieces)
        assert isinstance(first, FileSpan)
        assert isinstance(second, FileSpan)
        assert (first.offset, first.count) == (0, 5000)
        assert second.offset + second.count == len(LAYER) - 1
        last = asyncio.create_task(anext(pieces))
        assert await still_waiting(last)
        await writer.commit()
        download.finish(None)
        rest = await last
        assert isinstance(rest, FileSpan)
        assert (rest.offset, rest.count) == (len(LAYER) - 1, 1)
        assert await content(_replay(first, second, rest)) == LAYER
    assert PIN not in cache.pins


async def _replay(*pieces: bytes | FileSpan) -> AsyncIterator[bytes | FileSpan]:
    for piece in pieces:
        yield piece


async def test_a_download_that_fails_its_digest_never_sends_the_last_byte(cache: Cache) -> None:
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        pieces = blob.pieces(0, blob.size)
        await write(download, writer, LAYER)
        assert isinstance(await anext(pieces), FileSpan)
        download.finish(UpstreamInvalid("upstream blob does not match its digest"))
        with pytest.raises(UpstreamInvalid):
            await anext(pieces)
    await writer.abort()


async def test_a_range_of_a_download(cache: Cache) -> None:
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        reading = asyncio.create_task(content(blob.pieces(1000, 2000)))
        await write(download, writer, LAYER[:1500])
        assert await still_waiting(reading)
        await write(download, writer, LAYER[1500:])
        # The range ends before the last byte: nothing to hold back.
        assert await reading == LAYER[1000:2000]
    await writer.commit()
    download.finish(None)


async def test_past_a_full_disk_the_rest_comes_from_memory(cache: Cache) -> None:
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        reading = asyncio.create_task(content(blob.pieces(0, blob.size)))
        await write(download, writer, LAYER[:3000])
        hasher = await writer.detach()
        download.spilled(writer.written)
        hasher.update(LAYER[3000:])
        await download.relay(LAYER[3000:])
        assert await still_waiting(reading)  # the last byte, until the digest is checked
        assert hasher.hexdigest() == DIGEST.hex
        await writer.abort()
        download.finish(None)
        assert await reading == LAYER


async def test_a_blob_without_a_length_is_served_once_verified(cache: Cache) -> None:
    download, writer = await cache.download(None)

    async def opened() -> tuple[OpenBlob, bytes]:
        async with cache.blobs.open(TARGET, DIGEST) as blob:
            return blob, await content(blob.pieces(0, blob.size))

    task = asyncio.create_task(opened())
    await write(download, writer, LAYER)
    assert await still_waiting(task)  # no length: not even the first bytes go out early
    await writer.commit()
    download.finish(None)
    blob, body = await task
    assert (blob.size, blob.hit, blob.source) == (len(LAYER), False, "cache")
    assert body == LAYER


async def test_closing_mid_download_lets_go_of_it(cache: Cache) -> None:
    download, writer = await cache.download(len(LAYER))
    await write(download, writer, LAYER[:3000])
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        assert isinstance(await anext(blob.pieces(0, blob.size)), FileSpan)
        assert download._cursors  # counted as a reader: a full disk's tail waits for it
    assert not download._cursors
    assert PIN not in cache.pins
    await writer.abort()


# -- the window of latest bytes a download keeps for the readers keeping up ----------------

CHUNK = 1024


async def test_a_reader_keeping_up_is_sent_bytes_before_they_are_written(cache: Cache) -> None:
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as blob:
        pieces = blob.pieces(0, blob.size)
        download.arrived(LAYER[:CHUNK])
        assert await anext(pieces) == LAYER[:CHUNK]
        assert writer.written == 0
    await writer.abort()


async def test_a_reader_behind_the_window_reads_the_file_and_gets_the_same_bytes(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloads, "MAX_WINDOW_BYTES", 4 * CHUNK)
    download, writer = await cache.download(len(LAYER))
    async with cache.blobs.open(TARGET, DIGEST) as fast:
        kinds: set[type] = set()
        reading = asyncio.create_task(content(fast.pieces(0, fast.size), kinds))
        for offset in range(0, len(LAYER), CHUNK):
            chunk = LAYER[offset : offset + CHUNK]
            download.arrived(chunk)
            await writer.write(chunk)
            download.progress(writer.written)
            await asyncio.sleep(0)
        assert await still_waiting(reading)  # the last byte, until the digest checks
        async with cache.blobs.open(TARGET, DIGEST) as slow:
            slow_kinds: set[type] = set()
            late = asyncio.create_task(content(slow.pieces(0, slow.size), slow_kinds))
            assert await still_waiting(late)
            assert await writer.verify()
            download.verified()
            assert await reading == LAYER
            assert await late == LAYER
    assert kinds == {bytes}  # all from memory: it never needed the file
    assert slow_kinds == {FileSpan, bytes}  # the file up to the window, then memory
    await writer.commit()
    download.finish(None)


async def test_a_request_while_a_verified_blob_is_put_in_place_is_served_from_the_store(
    cache: Cache,
) -> None:
    download, writer = await cache.download(len(LAYER))
    cache.usage.learn(Kind.BLOB, DIGEST, TARGET.ref)
    download.arrived(LAYER)
    await writer.write(LAYER)
    download.progress(writer.written)
    assert await writer.verify()
    download.verified()

    async def opened() -> tuple[bool, bytes]:
        async with cache.blobs.open(TARGET, DIGEST) as blob:
            return blob.hit, await content(blob.pieces(0, blob.size))

    task = asyncio.create_task(opened())
    assert await still_waiting(task)  # not joined: it waits for the cache entry
    await writer.commit()
    download.finish(None)
    assert await task == (True, LAYER)
