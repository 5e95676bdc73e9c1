"""A blob download that another replica owns, followed into this replica's store.

The replica that gets a blob's lease downloads it from the upstream as a lone replica does
(downloads.py). The others follow it (fleetsource.py) through ``store.follower_writer``,
which verifies the digest as the owner's writer does and, for a store the replicas share,
stores nothing: the owner's copy is the one. Their clients follow that local download as
they follow an upstream one, last byte held back until the digest checks.

A replica that took the download over, or fetched it unshared, is the one to store it: for
a shared store it uploads its verified spool once the blob is whole, before letting go of
the lease, so that whoever waited for the lease finds the blob stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from proxy.cache.fleetsource import FleetSource
from proxy.cache.references import References
from proxy.cache.transfer import BlobTransfer, TransferSink
from proxy.cache.upstreams import client_for
from proxy.fleet.leases import Leases
from proxy.fleet.peerclient import PeerClient
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, BlobWriter, StoreUnavailable
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


class FleetDownloads:
    """``later``: called with a follower's verified writer, to be aborted (its spool
    removed) once the readers that joined it have opened it."""

    def __init__(
        self,
        leases: Leases,
        peers: PeerClient,
        store: BlobStore,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
        references: References,
    ) -> None:
        self.leases = leases
        self._peers = peers
        self._store = store
        self._clients = clients
        self._metrics = metrics
        self._references = references

    async def stored(self, digest: Digest) -> bool:
        """Whether the owner that let go of the lease just now stored the blob meanwhile."""
        if not self._store.shared:
            return False
        try:
            return await self._store.stat(digest) is not None
        except StoreUnavailable:
            return False

    async def follow(
        self,
        sink: TransferSink,
        target: Target,
        digest: Digest,
        later: Callable[[BlobWriter], None],
    ) -> bool:
        """Copy the blob from wherever its download is going on; True when this replica
        stored it. Raises a RegistryError as an upstream download does."""
        # A peer's bytes are no word of the upstream's that ``target`` holds the blob, which
        # an upstream download of its own would have been: ask, unless it is known.
        await self._references.check(target, Kind.BLOB, digest)
        client = client_for(self._clients, target)
        source = FleetSource(
            self.leases, self._peers, client, target, digest, self._store, self._metrics
        )
        try:
            await source.open()
            writer = await self._store.follower_writer(digest)
            transfer = BlobTransfer(client, target, digest, self._store, self._metrics)
            if not await transfer.copy(source.chunks(), source.size, writer, sink):
                return False
            if not self._store.shared:
                return True  # the follower writer of a store of this replica's own stored it
            later(writer)
            return source.stores and await self._upload(digest, writer)
        finally:
            await source.close()

    async def _upload(self, digest: Digest, followed: BlobWriter) -> bool:
        """Store a verified follower's bytes in the shared store, as their owner now."""
        reader = await followed.reader()
        if reader is None:
            return False
        try:
            writer = await self._store.writer(digest)
            try:
                async for chunk in reader.read(0, followed.written):
                    await writer.write(chunk)
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
        except StoreUnavailable:
            self._metrics.cache_write_failures.labels("store").inc()
            return False
        finally:
            await reader.close()
        return True
