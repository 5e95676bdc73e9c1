"""Copying one blob from its upstream into the store, resuming after a dropped connection.

When the upstream connection breaks mid-blob, the copy goes on with a ``Range`` request
from the byte reached, a few times with backoff, instead of starting again: for a large
layer over a flaky link, starting again may never finish.

When the cache disk fills up mid-blob, the copy goes on without caching: the bytes are
still hashed and handed to the readers through the sink, so clients are served from the
upstream stream, and nothing half-written ever becomes visible.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from typing import Protocol

import aiohttp

from proxy.errors import UpstreamInvalid, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest, Hasher
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter, DigestMismatch
from proxy.upstream.client import UpstreamClient, error_from

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
RESUME_BACKOFF = (0.1, 0.5, 2.0)  # one entry per resume attempt
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")
_disk_full_logged = False


class TransferSink(Protocol):
    """Where a transfer reports to: the download its readers follow."""

    def started(self, size: int | None, writer: BlobWriter) -> None: ...

    def progress(self, written: int) -> None:
        """Bytes ``[0, written)`` are in the writer's file."""

    def spilled(self, written: int) -> None:
        """The disk is full: the file ends at ``written``; the rest comes through relay."""

    async def relay(self, chunk: bytes) -> None:
        """The next bytes after the file's end, for readers only. May wait for slow readers."""


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
        self._path = f"/v2/{target.repository}/blobs/{digest}"
        self._upstream_bytes = metrics.upstream_bytes.labels(target.upstream.name)
        self._received = 0
        # Set when the disk filled up: the hash goes on here, the writer writes no more.
        self._hasher: Hasher | None = None

    async def run(self, sink: TransferSink) -> bool:
        """Copy the blob. True when it is now in the store, False when the disk was full.

        Raises a RegistryError; on any failure nothing is left in the store.
        """
        response = await self._client.request("GET", self._path, self._target.repository)
        if response.status != 200:
            raise await error_from(response, Kind.BLOB)
        size = response.content_length
        try:
            writer = await self._store.writer(self._digest)
        except BaseException:
            response.release()
            raise
        sink.started(size, writer)
        try:
            await self._copy(response, writer, size, sink)
            if self._hasher is None:
                await writer.commit()
                return True
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

    async def _copy(
        self,
        first: aiohttp.ClientResponse,
        writer: BlobWriter,
        size: int | None,
        sink: TransferSink,
    ) -> None:
        response: aiohttp.ClientResponse | None = first
        for attempt in range(len(RESUME_BACKOFF) + 1):
            try:
                if response is None:
                    response = await self._resume(self._received)
                await self._drain(response, writer, sink)
                if size is None or self._received == size:
                    return
                if self._received > size:
                    raise UpstreamInvalid("upstream sent more bytes than it announced")
                reason = f"connection closed after {self._received} of {size} bytes"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            except UpstreamUnavailable as exc:  # the resume request itself failed
                reason = exc.message
            finally:
                if response is not None:
                    response.release()
                    response = None
            # Without a length there is no telling where the blob ends: no resume.
            if size is None or attempt == len(RESUME_BACKOFF):
                raise UpstreamUnavailable(
                    "upstream connection failed mid-blob",
                    detail={"received": self._received, "size": size, "error": reason},
                )
            log.warning("%s: %s; resuming from byte %d", self._digest, reason, self._received)
            self._metrics.upstream_resumes.labels(self._target.upstream.name).inc()
            await asyncio.sleep(RESUME_BACKOFF[attempt])

    async def _drain(
        self, response: aiohttp.ClientResponse, writer: BlobWriter, sink: TransferSink
    ) -> None:
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            self._upstream_bytes.inc(len(chunk))
            if self._hasher is None:
                try:
                    await writer.write(chunk)
                except OSError as exc:
                    if exc.errno not in DISK_FULL:
                        raise
                    self._hasher = await writer.detach()
                    self._disk_full(exc)
                    sink.spilled(writer.written)
                    await sink.relay(chunk)
                else:
                    sink.progress(writer.written)
            else:
                self._hasher.update(chunk)
                await sink.relay(chunk)
            self._received += len(chunk)

    def _disk_full(self, exc: OSError) -> None:
        global _disk_full_logged
        self._metrics.cache_write_failures.labels("disk_full").inc()
        if not _disk_full_logged:
            # Once: a full disk would otherwise log on every blob until someone frees space.
            log.error("cache disk full (%s): serving from upstream without caching", exc)
            _disk_full_logged = True

    async def _resume(self, offset: int) -> aiohttp.ClientResponse:
        """A response whose body continues at ``offset``."""
        headers = [("Range", f"bytes={offset}-")]
        response = await self._client.request("GET", self._path, self._target.repository, headers)
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return response
            response.release()
            raise UpstreamInvalid("upstream answered a resume with the wrong range")
        if response.status == 200:
            # The upstream ignores Range: skip what we already have.
            await _skip(response, offset)
            return response
        raise await error_from(response, Kind.BLOB)


async def _skip(response: aiohttp.ClientResponse, count: int) -> None:
    while count > 0:
        chunk = await response.content.read(min(count, CHUNK_SIZE))
        if not chunk:
            raise aiohttp.ClientPayloadError("connection closed while skipping to the resume point")
        count -= len(chunk)
