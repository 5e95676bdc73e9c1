"""Keeping the cache within ``cache.max_size`` and ``cache.max_age``, in the background.

Each pass takes victims from the cold end of the LRU order until the cache fits, passing
over what is in use (being served or downloaded) and what ``regcache warm --pin`` pinned, so
its cost grows with what it evicts, not with the size of the cache. Pins are read from the
index on every pass, as another process (warm, unpin) may change them at any time.

At start the order is rebuilt from the blob store and the usage records; blobs found
without a record are adopted (a crash can leave those), with the time they were stored as
their last use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proxy.cache.lru import Key, Lru, Pins
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store import BlobStore, Index

log = logging.getLogger(__name__)


class Evictor:
    def __init__(
        self,
        store: BlobStore,
        index: Index,
        usage: Usage,
        pins: Pins,
        metrics: Metrics,
        *,
        max_size: int | None,
        max_age: float | None,
    ) -> None:
        assert usage.lru is not None, "eviction needs the LRU order"
        self._store = store
        self._index = index
        self._usage = usage
        self._lru: Lru = usage.lru
        self._pins = pins
        self._metrics = metrics
        self.max_size = max_size
        self.max_age = max_age
        self._task: asyncio.Task[None] | None = None

    async def rebuild(self) -> None:
        adopted = 0
        async for digest in self._store.digests():
            info = await self._store.stat(digest)
            if info is None:
                continue
            uses = await self._index.references(Kind.BLOB, digest)
            if uses:
                last = max(uses.values())
            else:
                adopted += 1
                last = info.modified
            self._lru.add((Kind.BLOB, digest), info.size, last)
        async for digest, size in self._index.manifest_sizes():
            uses = await self._index.references(Kind.MANIFEST, digest)
            self._lru.add((Kind.MANIFEST, digest), size, max(uses.values(), default=time.time()))
        self._lru.sort()
        if adopted:
            log.warning("adopted %d cached blobs that had no usage record", adopted)
        log.info("cache index: %d entries, %d bytes", len(self._lru), self._lru.total)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        # Age limits need a look now and then even when nothing new arrives.
        period = min(self.max_age / 10, 60.0) if self.max_age else None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._usage.grew.wait()
            self._usage.grew.clear()
            try:
                await self.evict()
            except Exception:
                log.exception("eviction pass failed; the next one will retry")

    async def evict(self) -> int:
        """One pass; returns the bytes freed."""
        if not self._due(time.time()):
            return 0  # the common pass, with no index read for the pins
        pinned = await self._pinned()
        victims = self._choose(time.time(), pinned)
        freed = 0
        for key in victims:
            if key in self._pins:
                continue  # in use since it was chosen
            entry = self._lru.remove(key)
            if entry is None:
                continue
            await self._delete(key)
            freed += entry.size
            self._metrics.evictions.labels(key[0].value).inc()
            self._metrics.evicted_bytes.inc(entry.size)
        if victims:
            log.info("evicted %d items, %d bytes", len(victims), freed)
        return freed

    def _due(self, now: float) -> bool:
        """Whether the cache is over a bound: too big, or its coldest entry too old."""
        if self.max_size is not None and self._lru.total > self.max_size:
            return True
        coldest = next(self._lru.oldest(), None)
        return (
            self.max_age is not None
            and coldest is not None
            and coldest[1].last_served < now - self.max_age
        )

    async def _pinned(self) -> frozenset[Digest]:
        """Every digest an image pinned by name needs; one index read."""
        return frozenset().union(*(await self._index.pins()).values())

    def _choose(self, now: float, pinned: frozenset[Digest]) -> list[Key]:
        """Victims, coldest first; no await here, so the order cannot change under us."""
        victims: list[Key] = []
        excess = self._lru.total - self.max_size if self.max_size is not None else 0
        oldest_allowed = now - self.max_age if self.max_age is not None else None
        for key, entry in self._lru.oldest():
            too_old = oldest_allowed is not None and entry.last_served < oldest_allowed
            if excess <= 0 and not too_old:
                break
            if key in self._pins or key[1] in pinned:
                continue
            victims.append(key)
            excess -= entry.size
        return victims

    async def _delete(self, key: Key) -> None:
        kind, digest = key
        if kind is Kind.BLOB:
            await self._store.delete(digest)
        else:
            await self._index.delete_manifest(digest)
        await self._usage.forget(kind, digest)
