"""A shared blob store with this replica's local tier in front (``storage.local_tier``).

The shared store (the bucket) is the record: what is stored, its size, the totals and the
listing are its. The tier (tier.py) holds copies of the blobs this replica served lately
and sends them with sendfile, without a request to the bucket; so a blob in the tier is
still served while the bucket is out of reach. A copy is made three ways, each verified
by digest before it is visible:

- a miss read from the bucket from its first byte to its last is copied into the tier as
  it is sent, one copy per digest at a time; a read cut short leaves nothing;
- a blob this replica stores is linked in from the shared writer's verified spool (where
  the writer offers it, see ``KeepsSpool``) rather than written twice;
- the bytes of a blob another replica stores, which this replica follows, go to the tier
  only (``follower_writer``): the owner puts them in the bucket.

A blob deleted from the bucket (by another replica's eviction, say) may still be served
from a tier until its LRU drops it: the bytes are still the digest's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from proxy.oci.digest import Digest
from proxy.store import (
    BlobInfo,
    BlobStore,
    BlobWriter,
    DigestMismatch,
    Presigning,
    StoredBlob,
)
from proxy.store.tier import LocalTier

log = logging.getLogger(__name__)

# Reads of stored blobs by where they were found: "hit" (the tier) or "miss" (the bucket).
TierCounter = Callable[[str], None]


def _ignore(result: str) -> None:
    pass


@runtime_checkable
class KeepsSpool(Protocol):
    """A shared store's writer that can hand over its verified local copy at commit."""

    keep: Callable[[Path], Awaitable[None]] | None


class TieredBlobStore(BlobStore):
    shared = True

    def __init__(self, store: BlobStore, tier: LocalTier, count: TierCounter = _ignore) -> None:
        self.store = store
        self.tier = tier
        self._count = count
        self._filling: set[Digest] = set()

    @property
    def changes(self) -> int:
        return self.store.changes

    @changes.setter
    def changes(self, count: int) -> None:
        self.store.changes = count

    async def stat(self, digest: Digest) -> BlobInfo | None:
        return await self.store.stat(digest)

    async def reader(self, digest: Digest) -> StoredBlob | None:
        local = await self.tier.reader(digest)
        if local is not None:
            self._count("hit")
            return local
        blob = await self.store.reader(digest)
        if blob is None:
            return None
        self._count("miss")
        return _Filling(self, digest, blob)

    async def writer(self, digest: Digest) -> BlobWriter:
        writer = await self.store.writer(digest)
        if isinstance(writer, KeepsSpool):
            writer.keep = functools.partial(self.tier.adopt, digest)
        return writer

    async def follower_writer(self, digest: Digest) -> BlobWriter:
        return await self.tier.writer(digest)

    async def delete(self, digest: Digest) -> bool:
        await self.tier.delete(digest)
        return await self.store.delete(digest)

    async def total_size(self) -> int:
        return await self.store.total_size()

    async def remeasure(self) -> None:
        await self.store.remeasure()

    async def digests(self) -> AsyncIterator[Digest]:
        async for digest in self.store.digests():
            yield digest

    async def check(self) -> None:
        await self.store.check()

    async def presigned_url(self, digest: Digest, expires: int) -> str:
        """With ``storage.s3.redirect`` the bytes bypass the replica, its tier too."""
        assert isinstance(self.store, Presigning), "redirect needs a store that presigns"
        return await self.store.presigned_url(digest, expires)

    async def start_fill(self, digest: Digest, size: int) -> _Fill | None:
        """A tier writer for a miss about to be read whole, unless one is under way or the
        blob would not fit."""
        if digest in self._filling or size > self.tier.max_bytes:
            return None
        self._filling.add(digest)
        try:
            return _Fill(digest, await self.tier.writer(digest), self._filling.discard)
        except OSError as error:
            self._filling.discard(digest)
            log.warning("could not fill the local tier with %s: %s", digest, error)
            return None


class _Fill:
    """One copy of a blob into the tier as it is read: best effort, never failing the read."""

    def __init__(self, digest: Digest, writer: BlobWriter, done: Callable[[Digest], None]) -> None:
        self._digest = digest
        self._writer = writer
        self._done = done
        self._broken = False

    async def write(self, chunk: bytes) -> None:
        if self._broken:
            return
        try:
            await self._writer.write(chunk)
        except OSError as error:
            self._broken = True
            log.warning("could not fill the local tier with %s: %s", self._digest, error)

    async def commit(self) -> None:
        if self._broken:
            return
        try:
            await self._writer.commit()
        except DigestMismatch as error:
            log.error("the shared store's bytes for %s do not match it: %s", self._digest, error)
        except OSError as error:
            log.warning("could not fill the local tier with %s: %s", self._digest, error)

    async def end(self) -> None:
        """After a commit, or instead of one: what is not committed is dropped."""
        self._done(self._digest)
        with contextlib.suppress(OSError):
            await self._writer.abort()


class _Filling(StoredBlob):
    """A blob read from the shared store, copied into the tier when read whole."""

    def __init__(self, tiered: TieredBlobStore, digest: Digest, blob: StoredBlob) -> None:
        self._tiered = tiered
        self._digest = digest
        self._blob = blob
        self.size = blob.size

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        whole = offset == 0 and end == self.size
        fill = await self._tiered.start_fill(self._digest, self.size) if whole else None
        if fill is None:
            async for chunk in self._blob.read(offset, end):
                yield chunk
            return
        try:
            # The last chunk is held back until the copy is in the tier: a client that has
            # the whole blob finds it there when it asks again.
            last = b""
            async for chunk in self._blob.read(offset, end):
                await fill.write(chunk)
                if last:
                    yield last
                last = chunk
            await fill.commit()
            yield last
        finally:
            await fill.end()

    async def close(self) -> None:
        await self._blob.close()
