"""Copying one blob from its upstream into the store, resuming after a dropped connection.

When the upstream connection breaks mid-blob, the copy goes on with a ``Range`` request
from the byte reached, a few times with backoff, instead of starting again: for a large
layer over a flaky link, starting again may never finish.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import aiohttp

from proxy.errors import UpstreamInvalid, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter, DigestMismatch, Kind
from proxy.upstream.client import UpstreamClient, error_from

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
RESUME_BACKOFF = (0.1, 0.5, 2.0)  # one entry per resume attempt
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


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
        self._received = metrics.upstream_bytes.labels(target.upstream.name)

    async def run(
        self,
        started: Callable[[int | None, BlobWriter], None],
        progress: Callable[[int], None],
    ) -> None:
        """Copy the blob; ``started`` once the upstream answered, ``progress`` per chunk.

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
        started(size, writer)
        try:
            await self._copy(response, writer, size, progress)
            await writer.commit()
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
        progress: Callable[[int], None],
    ) -> None:
        response: aiohttp.ClientResponse | None = first
        for attempt in range(len(RESUME_BACKOFF) + 1):
            try:
                if response is None:
                    response = await self._resume(writer.written)
                await self._drain(response, writer, progress)
                if size is None or writer.written == size:
                    return
                if writer.written > size:
                    raise UpstreamInvalid("upstream sent more bytes than it announced")
                reason = f"connection closed after {writer.written} of {size} bytes"
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
                    detail={"received": writer.written, "size": size, "error": reason},
                )
            log.warning("%s: %s; resuming from byte %d", self._digest, reason, writer.written)
            self._metrics.upstream_resumes.labels(self._target.upstream.name).inc()
            await asyncio.sleep(RESUME_BACKOFF[attempt])

    async def _drain(
        self,
        response: aiohttp.ClientResponse,
        writer: BlobWriter,
        progress: Callable[[int], None],
    ) -> None:
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            await writer.write(chunk)
            self._received.inc(len(chunk))
            progress(writer.written)

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
