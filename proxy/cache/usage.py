"""Where serving and storing content is recorded: usage records, and the eviction order.

Both are written in batches to the index (and the order beside it); what is kept in memory
is bounded, whatever the size of the cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Protocol, TypeVar

from proxy.cache.besteffort import best_effort, failure_log
from proxy.cache.lru import Key
from proxy.metrics import Metrics
from proxy.model import Kind, RepoRef, StoredManifest
from proxy.oci.digest import Digest
from proxy.oci.manifest import references
from proxy.store import INDEX_FAILURES, Index, UseKey

log = logging.getLogger(__name__)
_K = TypeVar("_K")

# Usage records are written in batches this often: a record per request was a quarter of
# the CPU of a cached tag lookup, and losing a few seconds of "last served" to a crash only
# makes eviction a little less exact.
FLUSH_EVERY = 2.0
# References checked or learned lately, kept in memory so that a warm request costs no index
# lookup; past this many the least recently used are looked up in the index again (a few
# tens of microseconds). A few thousand cover the images being pulled at any one time; each
# costs about 400 bytes, so this bounds them to a few MB however large the cache.
MAX_KNOWN = 8_000

# Pulls are counted for the status page's top ten; past twice this many repositories the
# least pulled are dropped, so that a cache of 100,000 repositories does not keep a count for
# each (a repository dropped and pulled again starts over: the top is approximate).
MAX_COUNTED = 2_000


class Order(Protocol):
    """Where the eviction order is kept: proxy.store.diskorder, proxy.store.redisorder."""

    async def stored(self, entries: dict[Key, tuple[int, float]]) -> None: ...

    async def used(self, uses: dict[Key, float]) -> None: ...


class Usage:
    def __init__(
        self,
        index: Index,
        metrics: Metrics,
        order: Order | None = None,
    ) -> None:
        """``order``: the eviction order of a bounded cache, kept by every process on it."""
        self._index = index
        self._metrics = metrics
        self._order = order
        # Set when the cache grew, so the evictor looks at it; unused without bounds.
        self.grew = asyncio.Event()
        self._pending: dict[UseKey, float] = {}
        # For the order, written with the usage records.
        self._stored: dict[Key, tuple[int, float]] = {}
        self._used: dict[Key, float] = {}
        self._known: OrderedDict[UseKey, None] = OrderedDict()
        self._parsed: OrderedDict[tuple[Digest, RepoRef], None] = OrderedDict()

    def served(self, kind: Kind, digest: Digest, ref: RepoRef) -> None:
        """``ref`` was served the content, which it references (checked before serving)."""
        now = time.time()
        key = (kind, digest, ref)
        self._pending[key] = now
        _remember(self._known, key)
        if self._order is not None:
            self._used[(kind, digest)] = now

    # -- which repositories reference what: the rule against cross-repository reads ----------

    async def known(self, kind: Kind, digest: Digest, ref: RepoRef) -> bool:
        """Whether ``ref`` is known to reference the content: learned in this process (the
        records not yet written included), or recorded in the index by any process."""
        key = (kind, digest, ref)
        if key in self._known:
            return True
        if key not in self._pending:
            try:
                if ref not in await self._index.references(kind, digest):
                    return False
            except INDEX_FAILURES as exc:
                # Not known is the safe answer: the upstream is asked instead.
                failure_log(exc)("could not read the references of %s: %s", digest, exc)
                return False
        _remember(self._known, key)
        return True

    def learn(self, kind: Kind, digest: Digest, ref: RepoRef) -> bool:
        """``ref`` references the content (its upstream said so): known at once, recorded in
        the index with the next batch, or by ``publish``. Whether it was news."""
        key = (kind, digest, ref)
        if key in self._known:
            return False
        _remember(self._known, key)
        self._pending.setdefault(key, time.time())
        return True

    def learn_manifest(self, manifest: StoredManifest, ref: RepoRef) -> list[UseKey]:
        """What a manifest pulled for ``ref`` references, ``ref`` references too; the
        references that were news."""
        if not _remember(self._parsed, (manifest.digest, ref)):
            return []
        found = references(manifest.body)
        kinds = [(Kind.BLOB, found.blobs), (Kind.MANIFEST, found.manifests)]
        return [
            (kind, digest, ref)
            for kind, digests in kinds
            for digest in digests
            if self.learn(kind, digest, ref)
        ]

    async def publish(self, keys: list[UseKey]) -> None:
        """Record references learned just now in the index at once, not with the next batch:
        the client's next request may reach another worker or replica, which would otherwise
        not know them for up to FLUSH_EVERY and ask the upstream again (and fail while the
        upstream is down, for content that is cached). A failed write leaves them pending."""
        uses = {key: self._pending[key] for key in keys if key in self._pending}
        if not uses:
            return
        if await best_effort(self._index.record_uses(uses), "record references", self._metrics):
            for key in uses:
                self._pending.pop(key, None)

    async def forget(self, kind: Kind, digest: Digest) -> None:
        """Drop every record of the content: it is gone from the cache."""
        for key in [k for k in self._pending if k[0] is kind and k[1] == digest]:
            del self._pending[key]
        self._stored.pop((kind, digest), None)
        self._used.pop((kind, digest), None)
        await self._index.forget(kind, digest)

    async def flush(self) -> None:
        if self._order is not None:
            await self._flush_order(self._order)
        pending, self._pending = self._pending, {}
        if pending:
            await self._index.record_uses(pending)

    async def run(self) -> None:
        """Flush in the background until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                await best_effort(self.flush(), "record uses", self._metrics)
        finally:
            await best_effort(self.flush(), "record uses", self._metrics)

    async def _flush_order(self, order: Order) -> None:
        """What was stored, then what was used: a use of content not yet in the order is
        dropped there. What was stored is kept for the next flush when the order's store is
        out, as the total would otherwise never count it."""
        stored, self._stored = self._stored, {}
        try:
            await order.stored(stored)
        except INDEX_FAILURES:
            self._stored = {**stored, **self._stored}
            raise
        used, self._used = self._used, {}
        await order.used(used)

    def stored(self, kind: Kind, digest: Digest, size: int) -> None:
        if self._order is not None:
            self._stored[(kind, digest)] = (size, time.time())
            self.grew.set()


def _remember(known: OrderedDict[_K, None], key: _K) -> bool:
    """Put ``key`` at the recent end of a bounded set; True if it was not there."""
    if key in known:
        known.move_to_end(key)
        return False
    known[key] = None
    if len(known) > MAX_KNOWN:
        known.popitem(last=False)
    return True


class PullCounter:
    """Tag resolutions per repository: one per pull for Docker, containerd and skopeo alike."""

    def __init__(self) -> None:
        self._counts: Counter[RepoRef] = Counter()

    def pulled(self, ref: RepoRef) -> None:
        self._counts[ref] += 1
        if len(self._counts) > 2 * MAX_COUNTED:
            # Trimmed by half at once, so that the sort costs little per pull.
            self._counts = Counter(dict(self._counts.most_common(MAX_COUNTED)))

    def top(self, n: int) -> list[tuple[RepoRef, int]]:
        return self._counts.most_common(n)
