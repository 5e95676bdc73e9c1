"""Following a download another replica owns, through its peer endpoint.

The owner answers ``GET /_regcache/peer/blobs/<digest>`` (proxy.server.peer) with its
download as it grows, from a ``Range`` start, holding back the last byte until the digest
checks, as it does for its own clients. Any way that stream ends short (the owner died, its
node went away, it answered something else) is one PeerUnavailable: the follower then looks
for who owns the download now.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp

from proxy.fleet.peertokens import peer_token
from proxy.metrics import Metrics
from proxy.oci.digest import Digest

PEER_PATH = "/_regcache/peer/blobs/{digest}"
# The whole blob's length on every answer, a 206 included.
SIZE_HEADER = "X-Regcache-Blob-Size"
CHUNK_SIZE = 256 * 1024
# A live owner whose upstream stalls sends nothing for a while, and that is no failure; a
# node gone without a word (no RST) shows as silence too, and is noticed after this long.
READ_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+)")


class PeerUnavailable(Exception):
    """The owner could not be followed (any further)."""


class PeerStream:
    """One answer of a peer: the blob's ``size`` and its bytes from the offset asked for."""

    def __init__(self, response: aiohttp.ClientResponse, offset: int, metrics: Metrics) -> None:
        self._response = response
        self._received = offset
        self._counted = metrics.peer_stream_bytes.labels("received")
        self.size = _size(response, offset)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await self._response.content.read(CHUNK_SIZE)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PeerUnavailable(f"peer stream broke at byte {self._received}: {exc}") from exc
            if not chunk:
                break
            if self._received + len(chunk) > self.size:
                raise PeerUnavailable("peer sent more bytes than the blob has")
            self._received += len(chunk)
            self._counted.inc(len(chunk))
            yield chunk
        if self._received != self.size:
            raise PeerUnavailable(f"peer stream closed at byte {self._received} of {self.size}")


class PeerClient:
    """Requests to peers, on the one session of the cache's HTTP clients."""

    def __init__(
        self, session: aiohttp.ClientSession, key: bytes | None, replica: str, metrics: Metrics
    ) -> None:
        """``key``: replica.secret_file's; without one no peer would let this replica in."""
        self._session = session
        self._key = key
        self._replica = replica
        self._metrics = metrics

    @contextlib.asynccontextmanager
    async def open(self, url: str, digest: Digest, offset: int) -> AsyncIterator[PeerStream]:
        """The peer at ``url``'s download (or stored copy) of ``digest`` from ``offset``."""
        if self._key is None:
            raise PeerUnavailable("no replica.secret_file to sign requests to peers with")
        headers = {"Authorization": f"Bearer {peer_token(self._key, self._replica, digest)}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        # sock_connect, not connect: a wait for a free connection of the pool is no failure.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
        )
        address = url.rstrip("/") + PEER_PATH.format(digest=digest)
        try:
            response = await self._session.get(address, headers=headers, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"peer {url} out of reach: {exc}") from exc
        try:
            if response.status not in (200, 206) or (response.status == 206) != bool(offset):
                raise PeerUnavailable(f"peer {url} answered {response.status}")
            yield PeerStream(response, offset, self._metrics)
        finally:
            response.close()  # not kept alive: a stream left half-read is not reusable


def _size(response: aiohttp.ClientResponse, offset: int) -> int:
    try:
        size = int(response.headers.get(SIZE_HEADER, ""))
    except ValueError:
        raise PeerUnavailable("peer answered without the blob's size") from None
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != offset or int(match[2]) != size:
            raise PeerUnavailable("peer answered another range")
    return size
