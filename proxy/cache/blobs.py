"""Blobs: served from the content-addressed store, or fetched once and followed.

A shared store out of reach is a miss here: the blob is fetched from the upstream and
served as it arrives, uncached, rather than answered with an error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from proxy.cache.downloads import Downloads
from proxy.cache.fleetdownloads import FleetDownloads
from proxy.cache.lru import Pins
from proxy.cache.reader import OpenBlob, follow_download, stored_blob
from proxy.cache.references import References
from proxy.cache.usage import Usage
from proxy.errors import RegistryError
from proxy.fleet.leases import Leases
from proxy.fleet.peerclient import PeerClient
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, Presigning, StoredBlob, StoreUnavailable
from proxy.upstream.client import UpstreamClient

# How long a presigned URL works: long enough for a slow client to start a large layer
# (Distribution's S3 driver presigns for 20 minutes), short enough to leak little.
PRESIGNED_SECONDS = 20 * 60


@dataclass(frozen=True, slots=True)
class BlobHead:
    size: int | None  # None when the upstream would not say
    cached: bool


class BlobCache:
    def __init__(
        self,
        store: BlobStore,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
        usage: Usage,
        pins: Pins,
        *,
        redirect: bool = False,
        leases: Leases | None = None,
        peers: PeerClient | None = None,
    ) -> None:
        """``leases`` and ``peers``: in a fleet, to download each blob once across it."""
        self._store = store
        # Only a store that can presign may send clients elsewhere (storage.s3.redirect).
        self._presigning = store if redirect and isinstance(store, Presigning) else None
        self._clients = clients
        self._metrics = metrics
        self._usage = usage
        self._pins = pins
        self._references = References(clients, usage)
        fleet = None
        if leases is not None and peers is not None:
            fleet = FleetDownloads(leases, peers, store, clients, metrics, self._references)
        self.downloads = Downloads(store, clients, metrics, usage, fleet)

    def open(self, target: Target, digest: Digest) -> Opening:
        """The blob for one response, cached or downloading, as ``async with``'s target.
        Raises the upstream's error.

        Pinned from before the lookup until the block ends, however it ends: eviction
        passes it over while its bytes are being sent.
        """
        return Opening(self, target, digest)

    async def _open(self, target: Target, digest: Digest) -> OpenBlob:
        """The stored blob or the download to follow, once ``target`` is known to reference
        the blob or the upstream confirmed it (see references.py). A download started for
        ``target`` is its own confirmation."""
        confirmed = False
        while True:
            stored = await self._stored(digest)
            if stored is None and await self._committing(digest):
                continue
            if stored is not None:
                if confirmed or await self._references.known(target, Kind.BLOB, digest):
                    return stored_blob(digest, stored)
                await stored.close()
            elif confirmed or await self._may_follow(target, digest):
                return await follow_download(self._store, self.downloads, target, digest)
            await self._references.confirm(target, Kind.BLOB, digest)
            # Look again: the blob may have been stored, or evicted, meanwhile.
            confirmed = True

    async def _stored(self, digest: Digest) -> StoredBlob | None:
        try:
            return await self._store.reader(digest)
        except StoreUnavailable:
            return None  # the store logs and counts its outage

    async def _committing(self, digest: Digest) -> bool:
        """Whether the blob's download was verified and is being put in place: waited for,
        so that the blob is served from the store as the hit it is about to be (a client
        that pulled it a moment ago may ask again before it is durable)."""
        download = self.downloads.active(digest)
        if download is None or not download.checked:
            return False
        with contextlib.suppress(RegistryError):
            await download.wait_done()
        return True

    async def _size(self, digest: Digest) -> int | None:
        try:
            return await self._store.size(digest)
        except StoreUnavailable:
            return None

    async def _may_follow(self, target: Target, digest: Digest) -> bool:
        """Whether ``target`` may start the blob's download, or join the one under way. A
        download started here that follows another replica's asks the upstream about its
        ``target`` first, unless it is known (fleetdownloads.py): the owner's bytes answer
        for the owner's request only."""
        download = self.downloads.active(digest)
        if download is None or download.target.ref == target.ref:
            return True
        return await self._references.known(target, Kind.BLOB, digest)

    async def redirect_url(self, blob: OpenBlob) -> str | None:
        """Where the client may fetch ``blob`` itself, for a cached blob of a store that
        presigns; None to send the bytes from here. Asked after ``open``, so only for a
        repository that references the blob."""
        if self._presigning is None or not blob.hit:
            return None
        return await self._presigning.presigned_url(blob.digest, PRESIGNED_SECONDS)

    async def head(self, target: Target, digest: Digest) -> BlobHead:
        """What a HEAD answers; from the cache or the download only for a repository known
        to reference the blob, so that a HEAD cannot tell others what is cached."""
        size = await self._size(digest)
        if size is None and await self._committing(digest):
            size = await self._size(digest)
        if size is not None and await self._references.known(target, Kind.BLOB, digest):
            return BlobHead(size, cached=True)
        download = self.downloads.active(digest)
        if (
            size is None
            and download is not None
            and download.size is not None
            and await self._may_follow(target, digest)
        ):
            return BlobHead(download.size, cached=False)
        upstream = await self._references.confirm(target, Kind.BLOB, digest)
        return BlobHead(size if size is not None else upstream.size, cached=size is not None)


class Opening:
    """``BlobCache.open``'s block. A class rather than a generator: this is on every blob
    request, where a generator's context manager costs more than the lookup of a cached blob."""

    def __init__(self, cache: BlobCache, target: Target, digest: Digest) -> None:
        self._cache = cache
        self._target = target
        self._key = (Kind.BLOB, digest)
        self._blob: OpenBlob | None = None

    async def __aenter__(self) -> OpenBlob:
        cache, digest = self._cache, self._key[1]
        cache._pins.acquire(self._key)
        try:
            self._blob = await cache._open(self._target, digest)
        except BaseException:
            cache._pins.release(self._key)
            raise
        cache._usage.served(Kind.BLOB, digest, self._target.ref)
        return self._blob

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._blob is not None:
                await self._blob.close()
        finally:
            self._cache._pins.release(self._key)
