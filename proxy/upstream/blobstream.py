"""One blob's bytes from an upstream, resumed after a dropped or stalled connection.

When the connection breaks mid-blob, the stream goes on with a ``Range`` request from the
byte reached, a few times with backoff, instead of starting again: for a large layer
over a flaky link, starting again may never finish. The reader sees one unbroken run of
chunks, or an UpstreamError.
"""

from __future__ import annotations

import asyncio
import logging
import re
from types import TracebackType

import aiohttp

from proxy.errors import UpstreamInvalid, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.model import Descriptor, Kind
from proxy.oci.digest import Digest
from proxy.upstream.failures import TRANSPORT_ERRORS, describe, error_from, unavailable
from proxy.upstream.transport import Transport, api_path

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
RESUME_BACKOFF = (0.1, 0.5, 2.0)  # one entry per resume attempt
OCTET_STREAM = "application/octet-stream"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class BlobStream:
    """``async with`` it to connect (its ``descriptor`` is then known), then iterate it.

    The iteration is the blob's hot path: a chunk costs one read and no allocation of
    our own, and everything that is not a plain chunk takes the slow path.
    """

    def __init__(
        self, transport: Transport, repository: str, digest: Digest, offset: int, metrics: Metrics
    ) -> None:
        self._transport = transport
        self._repository = repository
        self._digest = digest
        self._path = api_path(repository, f"blobs/{digest}")
        self._metrics = metrics
        self._bytes = metrics.upstream_bytes.labels(transport.upstream.name)
        self._received = offset
        self._resumes = 0
        self._response: aiohttp.ClientResponse | None = None
        # Read before connecting or after the end, it is empty: the iteration just stops.
        self._content: aiohttp.StreamReader = aiohttp.EMPTY_PAYLOAD
        # The size stays unknown until the upstream answers.
        self.descriptor = Descriptor(digest, OCTET_STREAM, None)

    async def __aenter__(self) -> BlobStream:
        offset = self._received
        try:
            response = await self._connect(ranged=offset > 0)
        except TRANSPORT_ERRORS as exc:  # only skipping to ``offset`` reads a body here
            self._release()
            raise unavailable(exc, "upstream connection failed", received=offset) from exc
        except BaseException:
            self._release()
            raise
        media_type = response.headers.get("Content-Type", OCTET_STREAM)
        self.descriptor = Descriptor(self._digest, media_type, _blob_size(response, offset))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()

    def __aiter__(self) -> BlobStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.read(CHUNK_SIZE)
        except TRANSPORT_ERRORS as exc:
            chunk = await self._resumed(describe(exc))
        else:
            if not chunk:
                chunk = await self._after_end()
        self._received += len(chunk)
        self._bytes.inc(len(chunk))
        return chunk

    async def _after_end(self) -> bytes:
        """The next chunk after the body ended: none if the blob is complete."""
        reason = self._shortfall()
        if reason is None:
            self._release()
            raise StopAsyncIteration
        return await self._resumed(reason)

    def _shortfall(self) -> str | None:
        """Why the body ended early, or None if it did not."""
        size = self.descriptor.size
        if size is None or self._received == size:
            return None
        if self._received > size:
            raise UpstreamInvalid("upstream sent more bytes than it announced")
        return f"connection closed after {self._received} of {size} bytes"

    async def _resumed(self, reason: str) -> bytes:
        """The next chunk from a new connection, the last one having failed for ``reason``."""
        while True:
            self._release()
            size = self.descriptor.size
            # Without a length there is no telling where the blob ends: no resume.
            if size is None or self._resumes == len(RESUME_BACKOFF):
                raise UpstreamUnavailable(
                    "upstream connection failed mid-blob",
                    detail={"received": self._received, "size": size, "error": reason},
                )
            log.warning("%s: %s; resuming from byte %d", self._digest, reason, self._received)
            self._metrics.upstream_resumes.labels(self._transport.upstream.name).inc()
            await asyncio.sleep(RESUME_BACKOFF[self._resumes])
            self._resumes += 1
            try:
                response = await self._connect(ranged=True)
                chunk = await response.content.read(CHUNK_SIZE)
            except TRANSPORT_ERRORS as exc:
                reason = describe(exc)
                continue
            except UpstreamUnavailable as exc:  # the resume request itself failed
                reason = exc.message
                continue
            # An empty new body comes here again, through _after_end, with one attempt less.
            return chunk or await self._after_end()

    async def _connect(self, ranged: bool) -> aiohttp.ClientResponse:
        """A response whose body starts at the byte reached."""
        offset = self._received
        headers = [("Range", f"bytes={offset}-")] if ranged else []
        response = await self._transport.request("GET", self._path, self._repository, headers)
        self._response = response
        if response.status == 200:
            # An upstream that ignores Range sends it all: skip what we already have.
            await _skip(response, offset)
        elif response.status != 206 or not ranged:
            raise await error_from(response, Kind.BLOB)
        elif _range_start(response) != offset:
            raise UpstreamInvalid("upstream answered a resume with the wrong range")
        self._content = response.content
        return response

    def _release(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None
        self._content = aiohttp.EMPTY_PAYLOAD


def _range_start(response: aiohttp.ClientResponse) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _blob_size(response: aiohttp.ClientResponse, offset: int) -> int | None:
    """The whole blob's size, from an answer that may start at ``offset``."""
    length = response.content_length
    if response.status == 200:
        return length
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match and match.group(2) != "*":
        return int(match.group(2))
    return None if length is None else offset + length


async def _skip(response: aiohttp.ClientResponse, count: int) -> None:
    while count > 0:
        chunk = await response.content.read(min(count, CHUNK_SIZE))
        if not chunk:
            raise aiohttp.ClientPayloadError("connection closed while skipping to the resume point")
        count -= len(chunk)
