"""Where serving and storing content is recorded: usage records, and the LRU order."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from proxy.cache.lru import Lru
from proxy.oci.digest import Digest
from proxy.store import Index, Kind, RepoRef


class Usage:
    def __init__(self, index: Index, lru: Lru | None = None) -> None:
        self._index = index
        self.lru = lru
        # Set when the cache grew, so the evictor looks at it; unused without bounds.
        self.grew = asyncio.Event()

    async def served(self, kind: Kind, digest: Digest, ref: RepoRef) -> None:
        now = time.time()
        await self._index.record_use(kind, digest, ref, now)
        if self.lru is not None:
            self.lru.touch((kind, digest), now)

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
