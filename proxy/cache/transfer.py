"""Copying one blob from its upstream into the store.

The upstream client's blob stream resumes a dropped connection by itself; here its
chunks only go into the store's verifying writer, and through the sink to the readers.

When the cache disk fills up mid-blob, the copy goes on without caching: the bytes are
still hashed and handed to the readers through the sink, so clients are served from the
upstream stream, and nothing half-written ever becomes visible.

When a shared store is out of reach, the writer's local spool still holds every byte for
the readers; only storing the blob fails, and the transfer ends uncached with the writer
detached (``leftover``), for the caller to abort once its readers have opened it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterable, Awaitable
from typing import Protocol

from proxy.errors import UpstreamInvalid
from proxy.metrics import Metrics
from proxy.oci.digest import Digest, Hasher
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter, DigestMismatch, StoreUnavailable
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_disk_full_logged = False
# From this size on, readers get a blob's last byte once its digest checks, and its fsync
# (which for hundreds of MB takes a good part of a second) follows the response. A smaller
# blob's is short, and waiting for it keeps a finished pull of it cached, as clients and
# tools checking the cache right after expect.
EARLY_RELEASE_BYTES = 8 * 1024 * 1024
# Bytes handed to the writer at once (the upstream's chunks are up to 256 KiB).
WRITE_BATCH = 1024 * 1024
# Up to this size a blob is gathered whole, then written and stored in one go (one trip to
# a thread rather than two), and its readers are sent it in one piece once stored: all but
# its last byte as it arrives, then that byte, would gain them no time and cost a second
# write and a wakeup of the client.
WHOLE_BYTES = 64 * 1024


class TransferSink(Protocol):
    """Where a transfer reports to: the download its readers follow."""

    def started(self, size: int | None, writer: BlobWriter) -> None: ...

    def arrived(self, chunk: bytes) -> None:
        """The next bytes, before the writer has them: for readers keeping up."""

    def progress(self, written: int) -> None:
        """Bytes ``[0, written)`` are stored by the writer and readable through its reader."""

    def spilled(self, written: int) -> None:
        """The disk is full: the writer holds ``[0, written)``; the rest comes through relay."""

    async def relay(self, chunk: bytes) -> None:
        """The next bytes after the writer's, for readers only. May wait for slow readers."""

    def verified(self) -> None:
        """Every byte is written and matches the digest: readers may have the last one,
        while the writer makes the blob durable and visible."""


class BlobTransfer:
    def __init__(
        self,
        client: UpstreamClient,
        target: Target,
        digest: Digest,
        store: BlobStore,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._target = target
        self._digest = digest
        self._store = store
        self._metrics = metrics
        # Set when the disk filled up: the hash goes on here, the writer writes no more.
        self._hasher: Hasher | None = None
        self.leftover: BlobWriter | None = None

    async def run(self, sink: TransferSink) -> bool:
        """Copy the blob. True when it is now in the store, False when the disk was full
        or the store out of reach.

        Raises a RegistryError; on any failure nothing is left in the store.
        """
        async with self._client.open_blob(self._target.repository, self._digest) as blob:
            writer = await self._store.writer(self._digest)
            return await self.copy(blob, blob.descriptor.size, writer, sink)

    async def copy(
        self,
        chunks: AsyncIterable[bytes],
        size: int | None,
        writer: BlobWriter,
        sink: TransferSink,
    ) -> bool:
        """Copy ``chunks`` (the whole blob, from wherever it comes) through ``writer``, as
        ``run`` copies the upstream's; the writer is aborted on failure."""
        whole = size is not None and size <= WHOLE_BYTES
        if not whole:
            await writer.begin()
        sink.started(size, writer)
        try:
            if whole:
                stored = await self._whole(chunks, writer, sink)
                if self._hasher is None:
                    return stored
            else:
                await self._drain(chunks, writer, sink)
                if self._hasher is None:
                    if size is not None and size >= EARLY_RELEASE_BYTES and await writer.verify():
                        sink.verified()
                    return await self._commit(writer, writer.commit())
            actual = self._hasher.hexdigest()
            if actual != self._digest.hex:
                raise DigestMismatch(self._digest, f"{self._digest.algorithm}:{actual}", size or 0)
            await writer.abort()
            return False
        except DigestMismatch as exc:
            self._metrics.digest_mismatch.labels(self._target.upstream.name, "blob").inc()
            raise UpstreamInvalid(
                "upstream blob does not match its digest",
                detail={"expected": str(exc.expected), "actual": exc.actual},
            ) from exc
        except BaseException:
            await writer.abort()
            raise

    async def _commit(self, writer: BlobWriter, commit: Awaitable[None]) -> bool:
        try:
            await commit
        except StoreUnavailable:
            # The store logs its outage once; here it only costs caching this blob.
            self._metrics.cache_write_failures.labels("store").inc()
            await writer.detach()
            self.leftover = writer
            return False
        return True

    async def _drain(
        self, chunks: AsyncIterable[bytes], writer: BlobWriter, sink: TransferSink
    ) -> None:
        # Readers have each chunk as it arrives; the writer gets them a batch at a time,
        # as a trip to a thread per chunk costs more on the event loop than the copy.
        batch: list[bytes] = []
        batched = 0
        async for chunk in chunks:
            if self._hasher is None:
                sink.arrived(chunk)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    await self._write(b"".join(batch), writer, sink)
                    batch.clear()
                    batched = 0
            else:
                await asyncio.to_thread(self._hasher.update, chunk)
                await sink.relay(chunk)
        if batch:
            await self._write(b"".join(batch), writer, sink)

    async def _whole(
        self, chunks: AsyncIterable[bytes], writer: BlobWriter, sink: TransferSink
    ) -> bool:
        """A small blob (WHOLE_BYTES): gathered, then written and committed at once."""
        received = []
        async for chunk in chunks:
            sink.arrived(chunk)
            received.append(chunk)
        data = b"".join(received)
        try:
            stored = await self._commit(writer, writer.write_whole(data))
        except OSError as exc:
            if exc.errno not in DISK_FULL or writer.written:
                raise  # not the write's: the commit's
            await self._spill(exc, data, writer, sink)
            return False
        sink.progress(writer.written)
        return stored

    async def _write(self, data: bytes, writer: BlobWriter, sink: TransferSink) -> None:
        try:
            await writer.write(data)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            await self._spill(exc, data, writer, sink)
        else:
            sink.progress(writer.written)

    async def _spill(
        self, exc: OSError, data: bytes, writer: BlobWriter, sink: TransferSink
    ) -> None:
        """The disk is full: ``data`` and what follows reach the readers only."""
        self._hasher = await writer.detach()
        self._disk_full(exc)
        sink.spilled(writer.written)
        await sink.relay(data)

    def _disk_full(self, exc: OSError) -> None:
        global _disk_full_logged
        self._metrics.cache_write_failures.labels("disk_full").inc()
        if not _disk_full_logged:
            # Once: a full disk would otherwise log on every blob until someone frees space.
            log.error("cache disk full (%s): serving from upstream without caching", exc)
            _disk_full_logged = True
