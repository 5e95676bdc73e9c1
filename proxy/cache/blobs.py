"""Blobs: served from the content-addressed store, or fetched once and followed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.cache.downloads import Download, Downloads
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore
from proxy.upstream.client import UpstreamClient


@dataclass(frozen=True, slots=True)
class CachedBlob:
    path: Path
    size: int


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
    ) -> None:
        self._store = store
        self._clients = clients
        self._metrics = metrics
        self._usage = usage
        self.downloads = Downloads(store, clients, metrics, usage)

    async def get(self, target: Target, digest: Digest) -> CachedBlob | Download:
        """The cached file, or the download to follow. Raises the upstream's error."""
        size = await self._store.size(digest)
        found: CachedBlob | Download
        if size is not None:
            found = CachedBlob(self._store.path(digest), size)
        else:
            found = await self.downloads.join(target, digest)
        self._usage.served(Kind.BLOB, digest, target.ref)
        return found

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
