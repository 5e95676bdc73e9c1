"""A replica's local tier: copies of hot blobs of the shared store on this replica's disk.

Blobs are files of a file store under ``<cache_dir>/tier``, so they go out with sendfile
and land only once their digest checked out. What sets the tier apart is its bound: its
own LRU order, kept in memory (the tier is this replica's alone), rebuilt at start from
the files' times (a read touches its file), removes the least recently read blobs once the
tier holds more than ``max_bytes``. A blob removed while a response reads it is still read
whole: an open file stays readable after its name is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path

from proxy.oci.digest import Digest
from proxy.store import BlobWriter, StoredBlob
from proxy.store.fsblobs import FsBlobStore, FsBlobWriter, open_stored

log = logging.getLogger(__name__)


def _open_touched(path: Path) -> StoredBlob | None:
    """Open, and mark the file as just read, so that a restart rebuilds the same order."""
    blob = open_stored(path)
    if blob is not None:
        with contextlib.suppress(OSError):  # removed meanwhile: the open file still reads
            os.utime(path)
    return blob


def _link_synced(source: Path, target: Path, max_bytes: int) -> tuple[int, bool] | None:
    """Blocking: ``source`` durable, then linked as ``target``; its size and whether it was
    not there already, or None when it is larger than ``max_bytes``. Durable first, as the
    file store's commit is: after a crash a blob in place is a whole blob."""
    fd = os.open(source, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            return None
        os.fsync(fd)
    finally:
        os.close(fd)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        return size, False
    return size, True


class LocalTier(FsBlobStore):
    """``open`` before use. ``held`` is what the LRU counts, ``total_size`` the files'."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        super().__init__(root)
        self.max_bytes = max_bytes
        self._recent: OrderedDict[Digest, int] = OrderedDict()  # least recently read first
        self.held = 0

    async def open(self, clean: bool = True) -> None:
        await super().open(clean)
        for digest, size in await asyncio.to_thread(self._oldest_first):
            self._remember(digest, size)
        await self._trim()  # the bound may have shrunk since the last start

    def _oldest_first(self) -> list[tuple[Digest, int]]:
        found = []
        for digest, path in self._walk():
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                found.append((info.st_mtime, digest, info.st_size))
        return [(digest, size) for _, digest, size in sorted(found, key=lambda f: f[0])]

    def _remember(self, digest: Digest, size: int) -> None:
        if digest not in self._recent:
            self.held += size
        self._recent[digest] = size
        self._recent.move_to_end(digest)

    def _forget(self, digest: Digest) -> None:
        size = self._recent.pop(digest, None)
        if size is not None:
            self.held -= size

    async def _trim(self) -> None:
        # Taken out of the order before the await: concurrent trims never pick one twice.
        while self.held > self.max_bytes and self._recent:
            digest, size = self._recent.popitem(last=False)
            self.held -= size
            try:
                await super().delete(digest)
            except OSError as error:  # a cache's trouble: never the failure of a store's write
                log.warning("could not remove %s from the local tier: %s", digest, error)

    async def kept(self, digest: Digest, size: int) -> None:
        """A blob just stored in the tier: the most recent, and the tier back within bounds
        (a blob larger than the whole tier does not stay)."""
        self._remember(digest, size)
        await self._trim()

    async def reader(self, digest: Digest) -> StoredBlob | None:
        blob = await asyncio.to_thread(_open_touched, self.path(digest))
        if blob is None:
            self._forget(digest)  # removed by hand, say: the order must not count it
        else:
            self._remember(digest, blob.size)
        return blob

    async def writer(self, digest: Digest) -> BlobWriter:
        writer = _TierWriter(self, digest, self._tmp / f"{digest.hex[:16]}-{uuid.uuid4().hex}")
        await writer.open()
        return writer

    async def adopt(self, digest: Digest, verified: Path) -> None:
        """Link in a file whose bytes hash to ``digest`` (a shared store's spool, just
        committed), sparing a second copy of the bytes. Best effort: the tier is a cache, and
        a blob it misses is filled on its first read."""
        try:
            linked = await asyncio.to_thread(
                _link_synced, verified, self.path(digest), self.max_bytes
            )
        except OSError as error:
            log.warning("could not keep %s in the local tier: %s", digest, error)
            return
        if linked is not None:
            size, new = linked
            if new:
                self.added(size)
            await self.kept(digest, size)

    async def delete(self, digest: Digest) -> bool:
        self._forget(digest)
        return await super().delete(digest)


class _TierWriter(FsBlobWriter):
    """The file store's writer, whose commit also puts the blob in the tier's order."""

    def __init__(self, tier: LocalTier, digest: Digest, path: Path) -> None:
        super().__init__(tier, digest, path)
        self._tier = tier

    async def commit(self) -> None:
        await super().commit()
        await self._tier.kept(self._digest, self.written)
