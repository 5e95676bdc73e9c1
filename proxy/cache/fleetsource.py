"""Where a blob's bytes come from on a replica that did not get its download's lease.

From the owner's peer endpoint, while it lives: its bytes are the upstream's, followed as
they arrive. When that stream breaks (the owner died, its node went away), this replica
looks for who owns the download now, as often as a lease may change hands:

- the lease is free (it expired, or was let go): this replica takes it over and resumes the
  download from the upstream with a Range request from the byte it reached;
- another replica took it: that one is followed from the byte reached;
- nobody can be followed for a while (``PATIENCE_LEASES`` lease lifetimes, or longer for a
  holder that gave no URL) although someone holds it: the upstream, unshared.

Every source is asked from the byte reached, so the chunks form one unbroken run, which the
caller's verifying writer hashes whole: a source that sent wrong bytes fails the digest, and
the readers then see a connection closed short, never a corrupt blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.errors import UpstreamInvalid
from proxy.fleet.leases import POLL_SECONDS, Lease, Leases, blob_lease
from proxy.fleet.peerclient import PeerClient, PeerUnavailable
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, IndexUnavailable, StoreUnavailable
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# How long nobody may be followed while the lease stays held, in lease lifetimes, before this
# replica fetches the blob itself: a dead owner's lease expires within one.
PATIENCE_LEASES = 3
# A holder that gave no URL cannot be followed, only waited for; it may be downloading a
# large blob as it should, so it is given longer.
NO_URL_PATIENCE = 60.0


@dataclass(frozen=True, slots=True)
class _Opened:
    size: int | None
    chunks: AsyncIterator[bytes]


class FleetSource:
    """One blob's bytes for one download: ``open`` it, read ``chunks``, ``close`` it (which
    lets go of a lease taken over). ``stores``: the bytes did not all come from a live
    owner (this replica took over, or went on unshared), so this replica must store them."""

    def __init__(
        self,
        leases: Leases,
        peers: PeerClient,
        client: UpstreamClient,
        target: Target,
        digest: Digest,
        store: BlobStore,
        metrics: Metrics,
    ) -> None:
        self._leases = leases
        self._peers = peers
        self._client = client
        self._target = target
        self._digest = digest
        self._store = store
        self._metrics = metrics
        self._name = blob_lease(digest)
        self.size: int | None = None
        self.offset = 0
        self.lease: Lease | None = None
        self.stores = False
        self._broken = False
        # Set when, after the stream broke, the lease was still held by someone who could not
        # be followed: the lease then changes hands by expiring, a takeover. (An owner that
        # failed lets go before its stream ends.)
        self._abandoned = False
        self._unreachable: str | None = None  # the holder last found out of reach
        self._unfollowable = False
        self._patience = PATIENCE_LEASES * leases.ttl
        self._opened: _Opened | None = None
        self._exits = contextlib.AsyncExitStack()
        self._source = contextlib.AsyncExitStack()

    async def open(self) -> None:
        """Find the first source; ``size`` is known after this (None: no length given)."""
        self._opened = await self._next()
        self.size = self._opened.size

    async def close(self) -> None:
        await self._source.aclose()
        await self._exits.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            assert self._opened is not None, "open first"
            try:
                async for chunk in self._opened.chunks:
                    self.offset += len(chunk)
                    yield chunk
                return
            except (PeerUnavailable, StoreUnavailable) as exc:
                log.warning("%s: %s; looking for its download's owner", self._digest, exc)
                self._broken = True
            await self._source.aclose()
            opened = await self._next()
            if opened.size != self.size:
                raise UpstreamInvalid(
                    "the blob's size changed between sources",
                    detail={"size": self.size, "now": opened.size},
                )
            self._opened = opened

    async def _next(self) -> _Opened:
        """The next source, from ``offset``."""
        started = time.monotonic()
        while True:
            try:
                found = await self._owned_or_followed()
            except IndexUnavailable:
                log.warning("%s: Redis out of reach; fetching it unshared", self._digest)
                self.stores = True
                return await self._upstream()
            if found is not None:
                return found
            # A holder that gave no URL may be downloading a large blob as it should.
            patience = NO_URL_PATIENCE if self._unfollowable else self._patience
            if time.monotonic() - started >= patience:
                log.warning("%s: nobody to follow; fetching it unshared", self._digest)
                self.stores = True
                return await self._upstream()
            await asyncio.sleep(POLL_SECONDS)

    async def _owned_or_followed(self) -> _Opened | None:
        """A source found now: the upstream under the lease just taken (or the store, where
        the owner put the blob just before letting go), or the holder's peer endpoint. None
        when nobody can be followed at the moment."""
        lease = await self._leases.acquire(self._name)
        if lease is not None:
            stored = await self._stored()
            if stored is not None:
                await lease.release()
                return stored
            await self._take(lease)
            return await self._upstream()
        holder = await self._leases.holder(self._name)
        self._unfollowable = holder is not None and not holder.url
        if holder is None or not holder.url or holder.url == self._leases.me.url:
            self._abandoned |= self._broken and holder is not None
            return None  # let go just now, or not to be followed: look again
        try:
            return await self._peer(holder.url)
        except PeerUnavailable as exc:
            # Once per holder: it is asked again every POLL_SECONDS until its lease expires.
            if self._unreachable != holder.replica:
                log.info("%s: cannot follow %s: %s", self._digest, holder.replica, exc)
                self._unreachable = holder.replica
            self._abandoned |= self._broken
            return None

    async def _take(self, lease: Lease) -> None:
        await self._exits.enter_async_context(lease.kept())
        self.lease = lease
        self.stores = True
        if self._abandoned:
            # The owner stopped sending and its lease expired: it died mid-download.
            self._metrics.lease_takeovers.inc()
            log.warning("%s: took its download over at byte %d", self._digest, self.offset)

    async def _stored(self) -> _Opened | None:
        """The blob in a shared store, stored by its owner since this replica looked."""
        if not self._store.shared:
            return None
        try:
            blob = await self._store.reader(self._digest)
        except StoreUnavailable:
            return None
        if blob is None:
            return None
        self._source.push_async_callback(blob.close)
        return _Opened(blob.size, _read_all(blob.read(self.offset, blob.size)))

    async def _peer(self, url: str) -> _Opened:
        stream = await self._source.enter_async_context(
            self._peers.open(url, self._digest, self.offset)
        )
        return _Opened(stream.size, aiter(stream))

    async def _upstream(self) -> _Opened:
        blob = await self._source.enter_async_context(
            self._client.open_blob(self._target.repository, self._digest, offset=self.offset)
        )
        return _Opened(blob.descriptor.size, aiter(blob))


async def _read_all(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A store's read; its failures mid-way as the store's outage, to look elsewhere."""
    try:
        async for chunk in chunks:
            yield chunk
    except (OSError, StoreUnavailable) as exc:
        raise StoreUnavailable(f"reading the stored blob failed: {exc}") from exc
