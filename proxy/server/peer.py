"""The peer endpoint: another replica following a blob download this one owns.

``GET|HEAD /_regcache/peer/blobs/<digest>``, on the port clients use, answers with this
replica's download of the blob as it grows (from a ``Range`` start), or else the stored blob.
It is the download's own ``follow``, as for this replica's clients: nothing is sent before
it arrived, and the last byte waits for the digest to check.

Only replicas may ask: a bearer token signed with ``replica.secret_file`` (peertokens.py),
checked before anything else. The client access rules do not apply: the asking replica
checked its own client's access before following. Every refusal is the same 401.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable

from aiohttp import web

from proxy.cache.blobs import BlobCache
from proxy.errors import BlobUnknown, DigestInvalid, RegistryError, Unauthorized
from proxy.fleet.peerclient import PEER_PATH, SIZE_HEADER
from proxy.fleet.peertokens import peer_token_valid
from proxy.metrics import Metrics
from proxy.model import FileSpan
from proxy.oci.digest import Digest, InvalidDigest
from proxy.server.ranges import byte_range
from proxy.server.sendfile import send_span
from proxy.store import BlobStore, StoredBlob, StoreUnavailable, pieces

log = logging.getLogger(__name__)

PEER_ROUTE = PEER_PATH.format(digest="{digest}")
OCTET_STREAM = "application/octet-stream"
Pieces = AsyncGenerator[bytes | FileSpan, None]


class PeerEndpoint:
    def __init__(
        self, key: bytes | None, blobs: BlobCache, store: BlobStore, metrics: Metrics
    ) -> None:
        self._key = key
        self._blobs = blobs
        self._store = store
        self._sent = metrics.peer_stream_bytes.labels("sent")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        named = request.match_info["digest"]
        if not peer_token_valid(self._key, request.headers.get("Authorization"), named):
            raise Unauthorized("peer authentication required")
        try:
            digest = Digest.parse(named)
        except InvalidDigest:
            raise DigestInvalid("not a digest") from None
        download = self._blobs.downloads.active(digest)
        if download is not None:
            await download.wait_started()  # the upstream's answer says how long the blob is
            if download.size is not None:
                return await self._send(request, digest, download.size, download.follow)
            # Without a length there is no last byte to hold back: the blob, once verified.
            await download.wait_done()
        stored = await self._stored(digest)
        if stored is None:
            raise BlobUnknown()
        try:
            return await self._send(
                request, digest, stored.size, lambda start, end: pieces(stored, start, end)
            )
        finally:
            await stored.close()

    async def _stored(self, digest: Digest) -> StoredBlob | None:
        try:
            return await self._store.reader(digest)
        except StoreUnavailable:
            return None

    async def _send(
        self,
        request: web.Request,
        digest: Digest,
        size: int,
        follow: Callable[[int, int], Pieces],
    ) -> web.StreamResponse:
        part = byte_range(request.headers.get("Range"), size)
        headers = {
            **part.headers(),
            SIZE_HEADER: str(size),
            "Content-Type": OCTET_STREAM,
            "Docker-Content-Digest": str(digest),
        }
        response = web.StreamResponse(status=part.status, headers=headers)
        response.content_length = part.length
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        reading: Pieces = follow(part.start, part.end)
        try:
            async for piece in reading:
                if isinstance(piece, bytes):
                    await response.write(piece)
                    self._sent.inc(len(piece))
                else:
                    await send_span(request, response, piece)
                    self._sent.inc(piece.count)
        except (RegistryError, ConnectionError) as error:
            log.info("peer stream of %s for %s ended short: %s", digest, request.remote, error)
            # Headers are gone: a connection closed short is the follower's signal.
            response.force_close()
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            await reading.aclose()
        await response.write_eof()
        return response
