"""Blobs as files under ``<cache_dir>/blobs/<algorithm>/<hh>/<hex>``.

Paths are built only from parsed digests, so no request can name a file outside the
cache directory. Bytes land in ``<cache_dir>/tmp`` first and are renamed into place only
after their digest checks out, so a visible blob is always a verified one.

A blob up to ``SMALL_BLOB`` is not made durable before it is put in place: its fsync cost
more CPU than the rest of its write, and it is read whole, and hashed, whenever it is opened.
What a crash left torn is found then, removed, and fetched again; never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import FileIO
from pathlib import Path
from typing import BinaryIO

import aiofiles.os

from proxy import tasks
from proxy.oci.digest import Digest, Hasher, InvalidDigest
from proxy.store import (
    BlobInfo,
    BlobReader,
    BlobStore,
    BlobWriter,
    DigestMismatch,
    StoredBlob,
)
from proxy.store.spool import FsFileReader, Spool, clear_directory

log = logging.getLogger(__name__)

# Commits wait on fsync, milliseconds each even for a small blob. In a pool of their own
# they do not hold up the opens and reads of cached blobs in asyncio's default one (a few
# threads), and many at once let the filesystem share one journal commit between them.
_COMMITS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="regcache-commit")
# Up to this size a stored blob is read when opened: a sendfile call and a close cost more
# than copying a few pages. Hashing it then costs a few microseconds per KiB, which is what
# lets its write skip the fsync.
SMALL_BLOB = 64 * 1024


class FsStoredBlob(FsFileReader, StoredBlob):
    def __init__(self, file: BinaryIO, size: int) -> None:
        super().__init__(file)
        self.size = size


class SmallStoredBlob(StoredBlob):
    """A stored blob small enough to be read whole when opened: sent as one write, with no
    file left open, no sendfile and no close to run in a thread."""

    def __init__(self, data: bytes) -> None:
        self.data: bytes = data
        self.size = len(data)

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        yield self.data[offset:end]

    async def close(self) -> None:
        pass


def open_stored(path: str | Path) -> StoredBlob | None:
    """Open and size in one go; a small blob is read then too, in one read of its size (a
    file object's readall reads once more to find the end), and checked against the digest
    its path names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    small = False
    try:
        size = os.fstat(fd).st_size
        small = size <= SMALL_BLOB
        if small:
            data = _read_all(fd, size)
            return SmallStoredBlob(data) if _intact(str(path), data) else None
        # Unbuffered: the bytes go out with sendfile or pread, never through a buffer.
        file = FileIO(fd, "rb")
        file.name = str(path)  # as open(path) names it, for whoever asks which file it is
        return FsStoredBlob(file, size)
    except BaseException:
        small = True  # not handed over: closed here
        raise
    finally:
        if small:
            os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    # A read may return less than asked (a signal); the blob is whole on disk.
    parts = [data]
    while chunk := os.read(fd, size):
        parts.append(chunk)
    return b"".join(parts)


def _intact(path: str, data: bytes) -> bool:
    """Whether a small blob's bytes match the digest its path names (``<algorithm>/
    <hh>/<hex>``); a torn one, written without an fsync before a crash, is removed."""
    hex_name = os.path.basename(path)
    algorithm = os.path.basename(os.path.dirname(os.path.dirname(path)))
    if hashlib.new(algorithm, data).hexdigest() == hex_name:
        return True
    log.warning("removing %s: its bytes do not match its digest (torn by a crash?)", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return False


def _info(digest: Digest, found: os.stat_result) -> BlobInfo | None:
    if found.st_size == 0 and not digest.matches(b""):
        return None  # torn by a crash (small blobs are not synced); opening removes it
    return BlobInfo(found.st_size, found.st_mtime)


class FsBlobWriter(BlobWriter):
    def __init__(self, store: FsBlobStore, digest: Digest, path: Path) -> None:
        self._store = store
        self._digest = digest
        self._hasher: Hasher = digest.hasher()
        self._spool = Spool(path)
        self.path = path
        self.written = 0

    async def open(self) -> None:
        """Nothing yet: the file is created by ``begin``, or by ``write_whole`` in its one
        trip to a thread. Until then its readers have the bytes from the download's window."""

    async def begin(self) -> None:
        if not self._spool.opened:
            await self._spool.open()

    async def write(self, chunk: bytes) -> None:
        # One trip to a thread for both: hashlib lets go of the GIL for large chunks, so the
        # event loop serves meanwhile.
        await asyncio.to_thread(self._hash_and_write, chunk)
        self.written += len(chunk)

    def _hash_and_write(self, chunk: bytes) -> None:
        # Hashed first: after a failed write (a full disk) the hash still covers the chunk.
        self._hasher.update(chunk)
        if not self._spool.opened:
            self._spool.open_now()
        self._spool.write_now(chunk)

    async def verify(self) -> bool:
        actual = self._hasher.hexdigest()
        if actual != self._digest.hex:
            await self._spool.discard()
            raise DigestMismatch(self._digest, f"{self._digest.algorithm}:{actual}", self.written)
        return True

    async def commit(self) -> None:
        # Checked here too, for callers that did not verify first: a hexdigest is cheap.
        await self.verify()
        loop = asyncio.get_running_loop()
        with self._store.changing():
            if await loop.run_in_executor(_COMMITS, self._put_in_place):
                self._store.added(self.written)

    async def write_whole(self, data: bytes) -> None:
        # A small blob's whole time in the store, from its file's creation to its link into
        # place, in one trip to a thread: hashed here first, as hashlib keeps the GIL for it.
        self._hasher.update(data)
        await self.verify()
        loop = asyncio.get_running_loop()
        with self._store.changing():
            if await loop.run_in_executor(_COMMITS, self._write_and_put, data):
                self._store.added(self.written)

    def _write_and_put(self, data: bytes) -> bool:
        """Blocking: ``_put_in_place`` after writing ``data``."""
        if not self._spool.opened:
            self._spool.open_now()
        self._spool.write_now(data)
        self.written += len(data)
        return self._put_in_place()

    def _put_in_place(self) -> bool:
        """Blocking: make the blob durable, then visible (after a crash a blob in place is a
        whole blob, or a small one its readers check), in one trip to a thread. True when
        this writer's link made it visible."""
        if not self._spool.opened:
            self._spool.open_now()  # an empty blob: nothing was written
        self._spool.sync_and_close_now(sync=self.written > SMALL_BLOB)
        final = self._store.path(self._digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A link fails if the blob is there already, so of writers racing on one digest
            # (two processes, two upstream names) exactly one counts it.
            os.link(self.path, final)
        except FileExistsError:
            return False
        finally:
            self.path.unlink(missing_ok=True)
        return True

    async def detach(self) -> Hasher:
        await self._spool.close()
        return self._hasher

    async def reader(self) -> BlobReader | None:
        return await asyncio.get_running_loop().run_in_executor(None, self._open_written)

    def _open_written(self) -> BlobReader | None:
        # Committed (linked into place and removed) or discarded since it began: the stored
        # blob, if any.
        return self._spool.open_reader() or open_stored(self._store.path(self._digest))

    async def abort(self) -> None:
        await self._spool.discard()


# Walks of the store when blobs came and went during each (remeasure).
MEASURE_TRIES = 3


class FsBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._blobs_name = str(self._blobs)
        self._tmp = root / "tmp"
        self._total = 0
        self._changing = 0  # stores and deletes under way (changing)
        self._measuring: asyncio.Task[None] | None = None

    async def open(self, clean: bool = True) -> None:
        """Create the layout, and with ``clean`` drop leftovers of interrupted writes (not
        while another process may be writing there). The cache is sized when first asked
        (``total_size``), not here: the walk of a large cache takes seconds of CPU (1.3 s for
        200,000 blobs), which at start would compete with the first requests in every
        worker, and which a bounded cache's eviction does not need (its order keeps the
        total)."""
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        if clean:
            await asyncio.to_thread(self._clean)

    async def close(self) -> None:
        if self._measuring is not None:
            await tasks.stop(self._measuring)

    def _clean(self) -> None:
        clear_directory(self._tmp)

    async def remeasure(self) -> None:
        # A blob this process stores or deletes while the walk runs may be counted twice or
        # not at all, so a walk that saw changes, or ended while one was under way, is walked
        # again. Under constant change the last walk stands: a small error until the next
        # measure, where keeping commits out of the walk would stall downloads for its length.
        for _ in range(MEASURE_TRIES):
            before = self.changes
            total = await asyncio.to_thread(self._measure)
            if self.changes == before and not self._changing:
                break
        self._total = total

    def _measure(self) -> int:
        total = 0
        for _, path in self._walk():
            with contextlib.suppress(FileNotFoundError):  # deleted by another process meanwhile
                total += path.stat().st_size
        return total

    def _walk(self) -> Iterator[tuple[Digest, os.DirEntry[str]]]:
        """Blocking: every blob, a directory's at a time."""
        for directory in self._directories():
            yield from self._walk_directory(directory)

    def _directories(self) -> list[Path]:
        """The directories blobs are in, ``<algorithm>/<hh>``: walked one at a time, so that
        a walk holds a few hundredth of the cache's names at once, never all of them."""
        return [path for algorithm in self._blobs.iterdir() for path in algorithm.iterdir()]

    def _walk_directory(self, directory: Path) -> list[tuple[Digest, os.DirEntry[str]]]:
        # Directory entries rather than a Path each: building the Paths was a third of the CPU
        # of sizing a large cache (200,000 blobs: 2.1 s, 1.3 s without them).
        found = []
        algorithm = directory.parent.name
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    found.append((Digest.parse(f"{algorithm}:{entry.name}"), entry))
                except InvalidDigest:
                    log.warning("ignoring stray file in blob store: %s", entry.path)
        return found

    def path(self, digest: Digest) -> Path:
        return Path(self.path_name(digest))

    def path_name(self, digest: Digest) -> str:
        """``path`` as a string, without building a Path on every request."""
        return f"{self._blobs_name}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    async def stat(self, digest: Digest) -> BlobInfo | None:
        try:
            found = await aiofiles.os.stat(self.path(digest))
        except FileNotFoundError:
            return None
        return _info(digest, found)

    def stat_now(self, digest: Digest) -> BlobInfo | None:
        """``stat`` on the event loop: one system call on a name just looked up (a miss
        checked the store) costs less than a trip to a thread."""
        try:
            return _info(digest, os.stat(self.path_name(digest)))
        except FileNotFoundError:
            return None

    async def reader(self, digest: Digest) -> StoredBlob | None:
        # On the event loop: an open, a fstat and, for a small blob, a read of pages the kernel
        # holds take microseconds, where the trip to a thread and back was a tenth of the CPU
        # of a warm request. A large blob is sent with sendfile, never read here.
        return open_stored(self.path_name(digest))

    async def writer(self, digest: Digest) -> BlobWriter:
        writer = FsBlobWriter(self, digest, self._tmp / f"{digest.hex[:16]}-{uuid.uuid4().hex}")
        await writer.open()
        return writer

    async def delete(self, digest: Digest) -> bool:
        path = self.path(digest)
        with self.changing():
            try:
                size = (await aiofiles.os.stat(path)).st_size
                await aiofiles.os.remove(path)
            except FileNotFoundError:
                return False
            self._total -= size
            self.changes += 1
            return True

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Around a store or delete: from its first change on disk to its count in the total,
        a measure's walk may have seen either side (``remeasure``)."""
        self._changing += 1
        try:
            yield
        finally:
            self._changing -= 1

    async def total_size(self) -> int:
        if self._measuring is None:
            self._measuring = asyncio.create_task(self.remeasure())
        if not self._measuring.done():
            # Shielded: a request that gives up waiting must not stop the measure.
            await asyncio.shield(self._measuring)
        return self._total

    async def digests(self) -> AsyncIterator[Digest]:
        for directory in await asyncio.to_thread(self._directories):
            for digest, _ in await asyncio.to_thread(self._walk_directory, directory):
                yield digest

    def added(self, size: int) -> None:
        self._total += size
        self.changes += 1
