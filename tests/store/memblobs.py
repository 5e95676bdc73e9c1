"""A blob store in memory, for tests: the interfaces implemented with no file anywhere.

It holds the conformance suite to what the interfaces promise rather than to what files
happen to do, and gives the blob reader a store without the local-file fast path. Stores
opened on the same root share their blobs, as a restarted process shares a bucket; writes
under way are lost on reopening, as an interrupted upload is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from proxy.oci.digest import Digest, Hasher
from proxy.store import BlobInfo, BlobReader, BlobStore, BlobWriter, DigestMismatch, StoredBlob

PIECE = 1000  # small, so that reads come in several pieces


@dataclass
class Bucket:
    blobs: dict[Digest, tuple[bytes, float]] = field(default_factory=dict)
    pending: set[MemoryBlobWriter] = field(default_factory=set)


_BUCKETS: dict[Path, Bucket] = {}


class MemoryReader(StoredBlob):
    def __init__(self, data: bytes | bytearray) -> None:
        self._data = data
        self.size = len(data)
        self.closed = False

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        assert not self.closed, "read after close"
        assert 0 <= offset <= end <= len(self._data), (offset, end, len(self._data))
        for start in range(offset, end, PIECE):
            yield bytes(self._data[start : min(start + PIECE, end)])

    async def close(self) -> None:
        self.closed = True


class MemoryBlobWriter(BlobWriter):
    def __init__(self, store: MemoryBlobStore, digest: Digest) -> None:
        self._store = store
        self._digest = digest
        self._hasher = digest.hasher()
        self._data = bytearray()
        self._state = "open"
        self.written = 0

    async def write(self, chunk: bytes) -> None:
        assert self._state == "open", self._state
        self._hasher.update(chunk)
        self._data += chunk
        self.written += len(chunk)

    async def commit(self) -> None:
        assert self._state == "open", self._state
        actual = self._hasher.hexdigest()
        if actual != self._digest.hex:
            self._end("aborted")
            raise DigestMismatch(self._digest, f"{self._digest.algorithm}:{actual}", self.written)
        self._end("committed")
        self._store.bucket.blobs.setdefault(self._digest, (bytes(self._data), time.time()))

    async def abort(self) -> None:
        if self._state != "committed":
            self._end("aborted")

    async def detach(self) -> Hasher:
        self._state = "detached"
        return self._hasher

    async def reader(self) -> BlobReader | None:
        if self._state in ("open", "detached"):
            # The same bytearray: the reader sees what is written later.
            return MemoryReader(self._data)
        return await self._store.reader(self._digest)

    def _end(self, state: str) -> None:
        self._state = state
        self._store.bucket.pending.discard(self)


class MemoryBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.bucket = _BUCKETS.setdefault(root, Bucket())
        # A new process: what the old one was writing is gone.
        self.bucket.pending.clear()

    async def stat(self, digest: Digest) -> BlobInfo | None:
        found = self.bucket.blobs.get(digest)
        return None if found is None else BlobInfo(len(found[0]), found[1])

    async def reader(self, digest: Digest) -> StoredBlob | None:
        found = self.bucket.blobs.get(digest)
        return None if found is None else MemoryReader(found[0])

    async def writer(self, digest: Digest) -> BlobWriter:
        writer = MemoryBlobWriter(self, digest)
        self.bucket.pending.add(writer)
        return writer

    async def delete(self, digest: Digest) -> bool:
        return self.bucket.blobs.pop(digest, None) is not None

    async def total_size(self) -> int:
        return sum(len(data) for data, _ in self.bucket.blobs.values())

    async def remeasure(self) -> None:
        pass  # total_size sums the bucket each time

    async def digests(self) -> AsyncIterator[Digest]:
        for digest in list(self.bucket.blobs):
            yield digest
