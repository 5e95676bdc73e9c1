"""One upstream download per blob, streamed to every client that asks meanwhile.

The first request for a missing blob starts a ``Download``: a task of its own that
writes the upstream's bytes into a temporary file through the blob store's verifying
writer. Every request for the same digest, the first one included, follows that file at
its own pace, so a slow client never holds back the download or the other clients, and
a client that goes away cancels nothing.

The last byte of a blob is held back from readers until the digest has been checked: a
client that read everything else and then loses the connection sees a failed pull
instead of a corrupt layer it might keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedReader

from proxy.cache.transfer import CHUNK_SIZE, BlobTransfer
from proxy.cache.usage import Usage
from proxy.errors import RegistryError, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter, Kind
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


class Download:
    def __init__(self, digest: Digest, store: BlobStore) -> None:
        self.digest = digest
        self._store = store
        self.size: int | None = None
        self.written = 0
        self.done = False
        self.error: RegistryError | None = None
        self._writer: BlobWriter | None = None
        self._started = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def wait_started(self) -> None:
        """Return once the upstream answered with the blob; raise its error otherwise."""
        await asyncio.shield(self._started)

    @property
    def stored_path(self) -> Path:
        return self._store.path(self.digest)

    async def wait_done(self) -> None:
        """Return once the blob is verified and in the store; raise the failure otherwise."""
        while not self.done:
            if self.error is not None:
                raise self.error
            await self._changed.wait()

    def _start(self, size: int | None, writer: BlobWriter) -> None:
        self.size = size
        self._writer = writer
        self._started.set_result(None)

    def _progress(self, written: int) -> None:
        self.written = written
        self._notify()

    def _finish(self, error: RegistryError | None) -> None:
        self.error = error
        self.done = error is None
        if not self._started.done():
            if error is None:
                raise AssertionError("download finished without starting")
            self._started.set_exception(error)
            # Nobody may be waiting on it; mark the exception as seen.
            self._started.exception()
        self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _readable(self, offset: int, end: int) -> int:
        """How far a reader at ``offset`` may read, waiting until that is past ``offset``."""
        while True:
            if self.error is not None:
                raise self.error
            if self.done:
                return end
            limit = self.written
            if self.size is None:
                limit = 0  # without a length we cannot hold back the last byte: wait for the end
            elif end >= self.size:
                limit = min(limit, self.size - 1)
            if limit > offset:
                return min(limit, end)
            await self._changed.wait()

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the blob as they become available and safe to send."""
        file = await self._open()
        try:
            await file.seek(start)
            offset = start
            while offset < end:
                limit = await self._readable(offset, end)
                while offset < limit:
                    chunk = await file.read(min(CHUNK_SIZE, limit - offset))
                    if not chunk:
                        raise UpstreamUnavailable("cached blob ended early")
                    offset += len(chunk)
                    yield chunk
        finally:
            await file.close()

    async def _open(self) -> AsyncBufferedReader:
        assert self._writer is not None
        try:
            return await aiofiles.open(self._writer.path, "rb")
        except FileNotFoundError:
            # Committed (renamed into place) or discarded since we looked.
            if self.error is not None:
                raise self.error from None
            return await aiofiles.open(self.stored_path, "rb")


class Downloads:
    """The downloads under way, by digest: the single flight for blobs."""

    def __init__(
        self,
        store: BlobStore,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
        usage: Usage,
    ) -> None:
        self._store = store
        self._clients = clients
        self._metrics = metrics
        self._usage = usage
        self._active: dict[Digest, Download] = {}

    def active(self, digest: Digest) -> Download | None:
        return self._active.get(digest)

    async def join(self, target: Target, digest: Digest) -> Download:
        download = self._active.get(digest)
        if download is not None:
            self._metrics.dedup_joins.labels("blob").inc()
        else:
            download = Download(digest, self._store)
            self._active[digest] = download
            self._metrics.inflight_downloads.inc()
            download.task = asyncio.create_task(self._run(download, target))
        await download.wait_started()
        return download

    async def close(self) -> None:
        tasks = [d.task for d in self._active.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, download: Download, target: Target) -> None:
        error: RegistryError | None = None
        try:
            await self._fetch(download, target)
        except RegistryError as exc:
            error = exc
        except asyncio.CancelledError:
            error = UpstreamUnavailable("download cancelled: regcache is shutting down")
            raise
        except Exception as exc:
            log.exception("download of %s failed", download.digest)
            error = UpstreamUnavailable("download failed", detail={"error": str(exc)})
        finally:
            del self._active[download.digest]
            self._metrics.inflight_downloads.dec()
            download._finish(error)

    async def _fetch(self, download: Download, target: Target) -> None:
        client = self._clients[target.upstream.name]
        transfer = BlobTransfer(client, target, download.digest, self._store, self._metrics)
        await transfer.run(download._start, download._progress)
        self._usage.stored(Kind.BLOB, download.digest, download.written)
        self._metrics.cache_size.set(await self._store.total_size())
