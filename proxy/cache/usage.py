"""Where serving and storing content is recorded: usage records, and the LRU order."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from proxy.cache.besteffort import best_effort
from proxy.cache.lru import Lru
from proxy.metrics import Metrics
from proxy.model import Kind, RepoRef
from proxy.oci.digest import Digest
from proxy.store import Index

# Usage records are written in batches this often: a record per request was a quarter of
# the CPU of a cached tag lookup, and losing a few seconds of "last served" to a crash only
# makes eviction a little less exact.
FLUSH_EVERY = 2.0


class Usage:
    def __init__(self, index: Index, metrics: Metrics, lru: Lru | None = None) -> None:
        self._index = index
        self._metrics = metrics
        self.lru = lru
        # Set when the cache grew, so the evictor looks at it; unused without bounds.
        self.grew = asyncio.Event()
        self._pending: dict[tuple[Kind, Digest, RepoRef], float] = {}

    def served(self, kind: Kind, digest: Digest, ref: RepoRef) -> None:
        now = time.time()
        self._pending[(kind, digest, ref)] = now
        if self.lru is not None:
            self.lru.touch((kind, digest), now)

    async def forget(self, kind: Kind, digest: Digest) -> None:
        """Drop every record of the content: it is gone from the cache."""
        for key in [k for k in self._pending if k[0] is kind and k[1] == digest]:
            del self._pending[key]
        await self._index.forget(kind, digest)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (kind, digest, ref), when in pending.items():
            await self._index.record_use(kind, digest, ref, when)

    async def run(self) -> None:
        """Flush in the background until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                await best_effort(self.flush(), "record uses", self._metrics)
        finally:
            await best_effort(self.flush(), "record uses", self._metrics)

    def stored(self, kind: Kind, digest: Digest, size: int) -> None:
        if self.lru is not None:
            self.lru.add((kind, digest), size, time.time())
            self.grew.set()


class PullCounter:
    """Tag resolutions per repository: one per pull for Docker, containerd and skopeo alike."""

    def __init__(self) -> None:
        self._counts: Counter[RepoRef] = Counter()

    def pulled(self, ref: RepoRef) -> None:
        self._counts[ref] += 1

    def top(self, n: int) -> list[tuple[RepoRef, int]]:
        return self._counts.most_common(n)
