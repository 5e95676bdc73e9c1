"""Blobs: served from the content-addressed store, or fetched once and followed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.cache.downloads import Downloads
from proxy.cache.lru import Pins
from proxy.cache.reader import OpenBlob, open_blob
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore
from proxy.upstream.client import UpstreamClient


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
    ) -> None:
        self._store = store
        self._clients = clients
        self._metrics = metrics
        self._usage = usage
        self._pins = pins
        self.downloads = Downloads(store, clients, metrics, usage)

    @contextlib.asynccontextmanager
    async def open(self, target: Target, digest: Digest) -> AsyncIterator[OpenBlob]:
        """The blob for one response, cached or downloading. Raises the upstream's error.

        Pinned from before the lookup until the block ends, however it ends: eviction
        passes it over while its bytes are being sent.
        """
        with self._pins.hold((Kind.BLOB, digest)):
            blob = await open_blob(self._store, self.downloads, target, digest)
            self._usage.served(Kind.BLOB, digest, target.ref)
            try:
                yield blob
            finally:
                await blob.close()

    async def head(self, target: Target, digest: Digest) -> BlobHead:
        size = await self._store.size(digest)
        if size is not None:
            return BlobHead(size, cached=True)
        download = self.downloads.active(digest)
        if download is not None and download.size is not None:
            return BlobHead(download.size, cached=False)
        client = self._clients[target.upstream.name]
        upstream = await client.head_blob(target.repository, digest)
        return BlobHead(upstream.size, cached=False)
