"""One upstream download per blob across the worker processes of one server (``--workers``).

Workers share the cache directory, and a digest's lock (lockfiles.py: a byte of
``<cache>/.locks/downloads.lock``, locked through an open of its own) makes one of them the
owner: it downloads the blob as a lone process does, and publishes the path of its temporary
file and the blob's size beside the lock once the upstream answered. A worker that finds the
lock held follows that file as it grows, as readers in one process follow a download, and once the
lock is free finds the blob stored: the owner verified it, linked it into place (the same
inode the followers have open) and only then let go.

An owner that dies lets go too (the kernel drops the locks of a dead process), without
storing the blob: the first follower to get the lock takes the download over. It copies what
the dead owner wrote into a writer of its own and asks the upstream for the rest with a
``Range`` request, its verifying writer hashing the whole run, and publishes its own file
for the other followers. The last byte stays held back until the digest checks, as always.

Locks are per open file description, so two opens in one process conflict as two processes
do: the tests run two owners in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from proxy.cache.lockfiles import LOCK_FILE, LockFile, Published
from proxy.cache.transfer import BlobTransfer, TransferSink
from proxy.cache.upstreams import client_for
from proxy.errors import UpstreamInvalid
from proxy.metrics import Metrics
from proxy.model import FileSpan
from proxy.oci.digest import Digest, Hasher
from proxy.routing import Target
from proxy.store import BlobReader, BlobWriter, LocalFile
from proxy.store.fsblobs import FsBlobStore
from proxy.upstream.blobstream import CHUNK_SIZE
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# How often a follower looks at the owner's file and lock: the lag of its readers behind the
# owner's, and the time it takes to notice that the owner died.
POLL_SECONDS = 0.02

Upstream = Callable[[TransferSink], Awaitable[None]]


class Download(TransferSink, Protocol):
    """What this module needs of downloads.py's Download, which imports this module."""

    digest: Digest
    size: int | None
    written: int


class Followed:
    """The files a follower's readers read, each valid up to a length: the owner's, and after
    a change of owner the next one's. All hold prefixes of the same blob."""

    def __init__(self) -> None:
        self.files: list[BinaryIO] = []
        self.valid: list[int] = []
        self.path: Path | None = None
        self.closed = False
        self._users = 1  # the download; each reader adds one

    def add(self, file: BinaryIO, path: Path) -> None:
        if self.files:
            self.valid[-1] = os.fstat(self.files[-1].fileno()).st_size
        self.files.append(file)
        self.valid.append(0)
        self.path = path

    def size(self) -> int:
        return os.fstat(self.files[-1].fileno()).st_size

    def holding(self, end: int) -> int:
        """The index of a file that holds bytes up to ``end``: the newest that does."""
        self.valid[-1] = max(self.valid[-1], self.size())
        for index in range(len(self.files) - 1, -1, -1):
            if self.valid[index] >= end:
                return index
        raise AssertionError(f"no followed file holds {end} bytes")

    def use(self) -> None:
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            self.closed = True
            for file in self.files:
                file.close()


class FollowedReader(BlobReader, LocalFile):
    """One reader's view of the followed files, through opens of its own: sendfile moves the
    file position, which readers must not share."""

    def __init__(self, followed: Followed) -> None:
        self._followed = followed
        self._own: dict[int, BinaryIO] = {}
        followed.use()

    def _file(self, end: int) -> BinaryIO:
        index = self._followed.holding(end)
        if index not in self._own:
            fd = self._followed.files[index].fileno()
            self._own[index] = open(f"/proc/self/fd/{fd}", "rb", buffering=0)  # noqa: SIM115
        return self._own[index]

    def span(self, offset: int, count: int) -> FileSpan:
        return FileSpan(self._file(offset + count), offset, count)

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        fd = self._file(end).fileno()
        while offset < end:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK_SIZE, end - offset), offset)
            if not chunk:
                raise EOFError(f"followed file ends at byte {offset}, before {end}")
            offset += len(chunk)
            yield chunk

    async def close(self) -> None:
        for file in self._own.values():
            file.close()
        self._followed.release()


class FollowedWriter(BlobWriter):
    """What a follower's download reads through: the followed files, and once they are
    closed (the download is over), the stored blob. Nothing writes to it."""

    def __init__(
        self, followed: Followed | None, stored: Callable[[], Awaitable[BlobReader | None]]
    ):
        self._followed = followed
        self._stored = stored
        self.written = 0

    async def reader(self) -> BlobReader | None:
        if self._followed is not None and not self._followed.closed:
            return FollowedReader(self._followed)
        return await self._stored()

    async def write(self, chunk: bytes) -> None:
        raise AssertionError("a followed download is written by its owner")

    async def commit(self) -> None:
        raise AssertionError("a followed download is stored by its owner")

    async def detach(self) -> Hasher:
        raise AssertionError("a followed download is written by its owner")

    async def abort(self) -> None:
        return None


class Publishing:
    """The download's sink, publishing the writer's file for the other workers once the
    upstream answered. After a takeover the download has started already: progress is passed
    on only past what its readers were told, which the earlier files hold."""

    def __init__(self, download: Download, lock: LockFile, followed: Followed | None) -> None:
        self._download = download
        self._lock = lock
        self._followed = followed
        self._unopened: Path | None = None  # the writer's file, for the followed files

    def started(self, size: int | None, writer: BlobWriter) -> None:
        path: Path | None = getattr(writer, "path", None)
        if path is not None:
            self._lock.publish(path, size)
        if self._followed is None:
            self._download.started(size, writer)
        else:
            # The file store's writer creates its file with the first write.
            self._unopened = path

    def arrived(self, chunk: bytes) -> None:
        # After a takeover the download's window does not start where these bytes do: its
        # readers catch up from the files instead.
        if self._followed is None:
            self._download.arrived(chunk)

    def progress(self, written: int) -> None:
        if self._unopened is not None and self._followed is not None:
            # Gone when the blob was written and stored in one go (transfer.WHOLE_BYTES): its
            # readers read the stored blob, once the download is over.
            with contextlib.suppress(FileNotFoundError):
                file = open(self._unopened, "rb", buffering=0)  # noqa: SIM115
                self._followed.add(file, self._unopened)
            self._unopened = None
        if written > self._download.written:
            self._download.progress(written)

    def spilled(self, written: int) -> None:
        self._download.spilled(max(written, self._download.written))

    async def relay(self, chunk: bytes) -> None:
        await self._download.relay(chunk)

    def verified(self) -> None:
        self._download.verified()


class FileFlight:
    """The single flight of one cache directory's workers; see the module's docstring."""

    def __init__(
        self,
        cache_dir: Path,
        store: FsBlobStore,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
    ) -> None:
        """``store``: the store of files in ``cache_dir``, which its blob's followers read."""
        self._lock_file = cache_dir / LOCK_FILE
        self._spools = cache_dir / "tmp"
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._clients = clients
        self._metrics = metrics

    async def fetch(self, download: Download, target: Target, upstream: Upstream) -> bool:
        """Fill ``download``: from the upstream through ``upstream`` as the owner, or by
        following the owner. True when this worker took the download over and stored it."""
        digest = download.digest
        lock = LockFile(self._lock_file, digest)
        followed: Followed | None = None
        stored = False
        waited = False  # on another owner, whose file may not have existed yet to follow
        try:
            while not lock.try_own():
                waited = True
                if followed is None:
                    followed = self._follow(download, lock)
                else:
                    self._advance(download, lock, followed)
                await asyncio.sleep(POLL_SECONDS)
            info = self._store.stat_now(digest)
            if info is not None:
                # The owner stored it (before its file could be followed, maybe): verified.
                if followed is None:
                    download.started(info.size, self._writer(digest, None))
                download.progress(info.size)
                stored = True
                return False
            if waited and lock.invalid():
                raise UpstreamInvalid("the blob's upstream bytes did not match its digest")
            self._discard_leftover(lock)
            try:
                if followed is None:
                    await upstream(Publishing(download, lock, None))
                    stored = True
                    return False  # ``upstream`` counts what it stored
                stored = await self._take_over(download, target, lock, followed)
                return stored
            except UpstreamInvalid:
                lock.mark_invalid()
                raise
        finally:
            lock.close(stored)
            if followed is not None:
                followed.release()

    def _follow(self, download: Download, lock: LockFile) -> Followed | None:
        """The owner's file, once it published one that exists."""
        found = self._published(lock)
        if found is None:
            return None
        try:
            file = open(found.path, "rb", buffering=0)  # noqa: SIM115 (Followed closes it)
        except FileNotFoundError:
            return None  # stored meanwhile, or a dead owner's publication
        followed = Followed()
        followed.add(file, found.path)
        self._metrics.dedup_joins.labels("blob").inc()
        download.started(found.size, self._writer(download.digest, followed))
        self._advance(download, lock, followed)
        return followed

    def _advance(self, download: Download, lock: LockFile, followed: Followed) -> None:
        found = self._published(lock)
        if found is not None and found.path != followed.path:
            # Another follower took the download over: its file grows from now on.
            with contextlib.suppress(FileNotFoundError):
                followed.add(open(found.path, "rb", buffering=0), found.path)  # noqa: SIM115
        written = followed.size()
        if written > download.written and download.size is not None:
            download.progress(min(written, download.size))

    def _discard_leftover(self, lock: LockFile) -> None:
        """As the new owner: remove a dead owner's temporary file and its publication (a
        follower may still have the file open, which keeps it readable)."""
        if lock.empty:
            return  # the usual case: nobody owned it before
        found = self._published(lock)
        if found is not None:
            with contextlib.suppress(FileNotFoundError):
                found.path.unlink()
        lock.clear()

    def _published(self, lock: LockFile) -> Published | None:
        """The owner's file, if it is one of the cache's temporary files: only those are
        ever followed, whatever a publication says."""
        found = lock.published()
        if found is None or found.path.parent != self._spools:
            return None
        return found

    def _writer(self, digest: Digest, followed: Followed | None) -> FollowedWriter:
        return FollowedWriter(followed, lambda: self._store.reader(digest))

    async def _take_over(
        self, download: Download, target: Target, lock: LockFile, followed: Followed
    ) -> bool:
        """Go on with a dead owner's download: its bytes, then the upstream's from there;
        without a length there is no knowing the bytes are the same blob's: from the start."""
        reached = followed.size() if download.size is not None else 0
        digest = download.digest
        self._metrics.lease_takeovers.inc()
        log.warning("%s: its owner is gone; taking its download over at byte %d", digest, reached)
        client = client_for(self._clients, target)
        async with client.open_blob(target.repository, digest, offset=reached) as rest:
            if download.size is not None and rest.descriptor.size != download.size:
                raise UpstreamInvalid(
                    "the blob's size changed during its download",
                    detail={"size": download.size, "now": rest.descriptor.size},
                )
            writer = await self._store.writer(digest)
            transfer = BlobTransfer(client, target, digest, self._store, self._metrics)
            sink = Publishing(download, lock, followed)
            chunks = _chained(followed.files[-1], reached, rest)
            return await transfer.copy(chunks, rest.descriptor.size, writer, sink)


async def _chained(
    file: BinaryIO, reached: int, rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    offset = 0
    while offset < reached:
        size = min(CHUNK_SIZE, reached - offset)
        chunk = await asyncio.to_thread(os.pread, file.fileno(), size, offset)
        if not chunk:
            raise EOFError(f"the dead owner's file ends at byte {offset}, before {reached}")
        offset += len(chunk)
        yield chunk
    async for chunk in rest:
        yield chunk
