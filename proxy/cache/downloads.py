"""One upstream download per blob, streamed to every client that asks meanwhile.

The first request for a missing blob starts a ``Download``: a task of its own that
writes the upstream's bytes into a temporary file through the blob store's verifying
writer. Every request for the same digest, the first one included, follows at its own
pace, so a slow client never holds back the download or the other clients, and a client
that goes away cancels nothing. The latest bytes received are kept in memory for a while
(a bounded window): a reader keeping up is sent them from there, without waiting for
the disk or reading the file back; one that fell behind the window reads the file.

The last byte of a blob is held back from readers until the digest has been checked: a
client that read everything else and then loses the connection sees a failed pull
instead of a corrupt layer it might keep. It need not wait for the blob to be durable:
the store makes it a cache entry after the response, and only whole.

When the cache disk fills up mid-blob, the file stops growing and the rest of the blob
reaches the readers through the in-memory window alone; the slowest reader then sets
the pace, and the download is no longer joinable (a later request starts its own).

In a fleet (``fleet``), one replica downloads each blob: the one that gets its lease. The
others' downloads follow the owner's (fleetdownloads.py), and are followed here the same.
Among the worker processes of one server (``flight``), one worker downloads each blob: the
one that gets its lock (localdownloads.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

from proxy import tasks
from proxy.cache.fleetdownloads import FleetDownloads
from proxy.cache.localdownloads import FileFlight
from proxy.cache.transfer import WHOLE_BYTES, BlobTransfer, TransferSink
from proxy.cache.upstreams import client_for
from proxy.cache.usage import Usage
from proxy.cache.window import Window
from proxy.errors import RegistryError, UpstreamUnavailable
from proxy.fleet.leases import blob_lease
from proxy.metrics import Metrics
from proxy.model import FileSpan, Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobReader, BlobStore, BlobWriter, IndexUnavailable, pieces
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# A span is sent in one sendfile call; smaller ones keep the hold-back of a blob's end and
# the progress a follower reports fine-grained.
MAX_SPAN = 8 * 1024 * 1024
# How much of a blob being written is kept in memory for the readers keeping up; the
# window holds the bytes not yet written on top (up to transfer.WRITE_BATCH and a chunk).
# Per download, so small: a reader that lags by more reads the file, from the page cache.
MAX_WINDOW_BYTES = 2 * 1024 * 1024
# How much of an uncacheable blob is kept in memory for readers that lag behind.
MAX_TAIL_BYTES = 16 * 1024 * 1024
# A reader that stays this far behind for this long is given up on, not waited for.
TAIL_READER_PATIENCE = 60.0
# An uncached blob's spool outlives its download this long: readers that joined it open
# the spool just after (an open file stays readable once removed).
LEFTOVER_GRACE = 30.0
# How long shutting down waits for verified blobs to be made durable and put in place.
COMMIT_GRACE = 10.0


class Download:
    def __init__(
        self,
        digest: Digest,
        on_spill: Callable[[Download], None],
        target: Target,
    ) -> None:
        self.digest = digest
        self.target = target  # the first request's; joiners may name other repositories
        self._on_spill = on_spill
        self.size: int | None = None
        self.written = 0
        self.done = False
        self.error: RegistryError | None = None
        self._writer: BlobWriter | None = None
        self._started = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self.spilled_at: int | None = None
        self.checked = False  # the digest: the last byte may go out, the blob is not stored yet
        self._window = Window(0)
        self._cursors: dict[int, int] = {}
        self._reader_ids = itertools.count()
        self.task: asyncio.Task[None] | None = None

    async def wait_started(self) -> None:
        """Return once the upstream answered with the blob; raise its error otherwise."""
        await asyncio.shield(self._started)

    async def wait_done(self) -> None:
        """Return once the blob is verified and in the store; raise the failure otherwise."""
        while not self.done:
            if self.error is not None:
                raise self.error
            await self._changed.wait()
        if self.spilled_at is not None:
            raise UpstreamUnavailable("the cache disk is full and the blob has no length")

    # -- the transfer's side (TransferSink) ------------------------------------------------

    def started(self, size: int | None, writer: BlobWriter) -> None:
        self.size = size
        self._writer = writer
        self._started.set_result(None)

    def arrived(self, chunk: bytes) -> None:
        self._window.append(chunk)
        self._notify()

    def progress(self, written: int) -> None:
        self.written = written
        window = self._window
        # Only bytes in the file leave the window: a reader behind it reads them there.
        window.drop_before(min(written, window.end - MAX_WINDOW_BYTES))
        self._notify()

    def spilled(self, written: int) -> None:
        # A request arriving from now on would need bytes no longer kept anywhere.
        self._on_spill(self)
        self.spilled_at = written
        self._window.cut_at(written)
        if self._window.end != written:  # nothing came through the window
            self._window = Window(written)
        self._notify()

    def verified(self) -> None:
        self.checked = True
        self._notify()

    async def relay(self, chunk: bytes) -> None:
        tail = self._window
        tail.append(chunk)
        self._notify()
        # Wait for the slowest reader rather than drop bytes it still needs; a reader that
        # stalls for good loses its place instead of stalling everyone.
        try:
            async with asyncio.timeout(TAIL_READER_PATIENCE):
                while tail.end - self._slowest(tail) > MAX_TAIL_BYTES:
                    await self._changed.wait()
        except TimeoutError:
            pass
        tail.drop_before(min(self._slowest(tail), tail.end - MAX_TAIL_BYTES))

    def _slowest(self, tail: Window) -> int:
        return min(self._cursors.values(), default=tail.end)

    def finish(self, error: RegistryError | None) -> None:
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

    # -- the readers' side -------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Bytes received so far, cached or not."""
        return self._available()

    def _available(self) -> int:
        return max(self._window.end, self.written)

    async def _readable(self, offset: int, end: int) -> int:
        """How far a reader at ``offset`` may read, waiting until that is past ``offset``."""
        while True:
            if self.error is not None:
                raise self.error
            if self.done or self.checked:
                return end
            limit = self._available()
            if self.size is None:
                limit = 0  # without a length we cannot hold back the last byte: wait for the end
            elif self.size <= WHOLE_BYTES:
                limit = 0  # sent whole once stored: see WHOLE_BYTES
            elif end >= self.size:
                limit = min(limit, self.size - 1)
            if limit > offset:
                return min(limit, end)
            await self._changed.wait()

    async def follow(self, start: int, end: int) -> AsyncGenerator[bytes | FileSpan, None]:
        """Bytes ``[start, end)`` of the blob as they become available and safe to send:
        from the window in memory while the reader keeps up with it, else what the writer
        has written (spans of its file, for sendfile, where the store has one)."""
        reader = next(self._reader_ids)
        self._cursors[reader] = start
        # Opened only once a reader falls behind the window: one keeping up never needs it.
        written: BlobReader | None = None
        try:
            offset = start
            while offset < end:
                limit = await self._readable(offset, end)
                while offset < limit:
                    window = self._window
                    spilled_at = self.spilled_at
                    if window.start <= offset < window.end or (
                        spilled_at is not None and offset >= spilled_at
                    ):
                        chunk = window.read(offset, limit)
                        yield chunk
                        offset += len(chunk)
                    else:
                        written = written or await self._open()
                        async for piece in self._file_pieces(written, offset, limit):
                            yield piece
                            offset += len(piece) if isinstance(piece, bytes) else piece.count
                    self._cursors[reader] = offset
                    if self.spilled_at is not None:
                        self._notify()  # the relay may be waiting for this reader
        finally:
            del self._cursors[reader]
            self._notify()
            if written is not None:
                await written.close()

    def _file_pieces(
        self, written: BlobReader, offset: int, limit: int
    ) -> AsyncIterator[bytes | FileSpan]:
        """Pieces of the file, which holds ``[0, written)``: all of the blob but the window."""
        return pieces(written, offset, min(limit, self.written, offset + MAX_SPAN))

    async def _open(self) -> BlobReader:
        assert self._writer is not None
        written = await self._writer.reader()
        if written is None:
            # Discarded since the download began.
            if self.error is not None:
                raise self.error
            raise UpstreamUnavailable("the blob is neither downloading nor cached")
        return written


class Downloads:
    """The downloads under way, by digest: the single flight for blobs."""

    def __init__(
        self,
        store: BlobStore,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
        usage: Usage,
        fleet: FleetDownloads | None = None,
    ) -> None:
        self._store = store
        self._clients = clients
        self._metrics = metrics
        self._usage = usage
        self._fleet = fleet
        self.flight: FileFlight | None = None  # set by a worker of several (--workers)
        self._active: dict[Digest, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def active(self, digest: Digest) -> Download | None:
        return self._active.get(digest)

    def in_flight(self) -> list[Download]:
        return list(self._active.values())

    async def join(self, target: Target, digest: Digest) -> Download:
        download = self._active.get(digest)
        if download is not None:
            self._metrics.dedup_joins.labels("blob").inc()
        else:
            download = Download(digest, self._leave, target)
            self._active[digest] = download
            self._metrics.inflight_downloads.inc()
            download.task = asyncio.create_task(self._run(download, target))
            self._tasks.add(download.task)
            download.task.add_done_callback(self._tasks.discard)
        await download.wait_started()
        return download

    async def close(self) -> None:
        # A verified blob's clients have it already: let it become a cache entry first.
        committing = [d.task for d in self._active.values() if d.checked and d.task]
        if committing:
            await asyncio.wait(committing, timeout=COMMIT_GRACE)
        await tasks.stop_all(list(self._tasks))

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
            self._leave(download)
            self._metrics.inflight_downloads.dec()
            download.finish(error)

    def _leave(self, download: Download) -> None:
        if self._active.get(download.digest) is download:
            del self._active[download.digest]

    async def _fetch(self, download: Download, target: Target) -> None:
        fleet = self._fleet
        if fleet is None and self.flight is not None:
            owner = functools.partial(self._upstream, download, target)
            if await self.flight.fetch(download, target, owner):
                self._usage.stored(Kind.BLOB, download.digest, download.written)
            return None
        if fleet is None:
            return await self._upstream(download, target)
        try:
            lease = await fleet.leases.acquire(blob_lease(download.digest))
        except IndexUnavailable:
            return await self._upstream(download, target)  # unshared, as a lone replica
        if lease is not None:
            async with lease.kept():
                # Free, the lease may be one just let go by an owner that stored the blob.
                if not await fleet.stored(download.digest):
                    return await self._upstream(download, target)
        else:
            self._metrics.lease_waits.labels("blob").inc()
        later = self._abort_later
        if await fleet.follow(download, target, download.digest, later):
            self._usage.stored(Kind.BLOB, download.digest, download.written)

    def _abort_later(self, writer: BlobWriter) -> None:
        self._keep(_abort_later(writer))

    async def _upstream(
        self, download: Download, target: Target, sink: TransferSink | None = None
    ) -> None:
        client = client_for(self._clients, target)
        transfer = BlobTransfer(client, target, download.digest, self._store, self._metrics)
        if await transfer.run(sink or download):
            self._usage.stored(Kind.BLOB, download.digest, download.written)
        elif transfer.leftover is not None:
            self._abort_later(transfer.leftover)

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _abort_later(writer: BlobWriter) -> None:
    try:
        await asyncio.sleep(LEFTOVER_GRACE)
    finally:
        await writer.abort()
