"""Keeping the cache within ``cache.max_size`` and ``cache.max_age``, in the background.

Each pass takes victims from the cold end of the LRU order until the cache fits, passing
over what is in use (being served or downloaded) and what ``regcache warm --pin`` pinned, so
its cost grows with what it evicts, not with the size of the cache. Pins are read from the
index on every pass, as another process (warm, unpin) may change them at any time.

At start the order is rebuilt from the blob store and the usage records; blobs found
without a record are adopted (a crash can leave those), with the time they were stored as
their last use. Commands run beside the server (warm, import, rm, prune) change the stores
behind its back; they bump the index's change counter when they did (proxy.server.cacheparts),
and a pass that finds the counter moved rebuilds the order the same way, adopting what they
stored and dropping what they removed, which no pass then counts as evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Container
from dataclasses import dataclass

from proxy import tasks
from proxy.cache.lru import Key, Lru, Pins
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store import BlobStore, Index, IndexUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

# How often an idle server reads the index's change counter, so that what a command run beside
# it stored is evicted (and what it removed is no longer counted) without waiting for a request.
FOLLOW_EVERY = 10.0


class EvictionLoop(ABC):
    """Eviction passes in the background: when the cache grew, and now and then."""

    def __init__(self, usage: Usage, *, max_size: int | None, max_age: float | None) -> None:
        self._usage = usage
        self.max_size = max_size
        self.max_age = max_age
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            await tasks.stop(self._task)

    async def _loop(self) -> None:
        while True:
            # Age limits, and commands run beside the server, need a look now and then even
            # when nothing new arrives here.
            period = min(self.max_age / 10, FOLLOW_EVERY) if self.max_age else FOLLOW_EVERY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._usage.grew.wait()
            self._usage.grew.clear()
            try:
                await self.evict()
            except (StoreUnavailable, IndexUnavailable):
                pass  # the store logs its outage once; this pass would log it every time
            except Exception:
                log.exception("eviction pass failed; the next one will retry")

    @abstractmethod
    async def evict(self) -> int:
        """One pass; returns the bytes freed."""


class Evictor(EvictionLoop):
    """This process's eviction, over its own order in memory."""

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
        super().__init__(usage, max_size=max_size, max_age=max_age)
        self._store = store
        self._index = index
        self._lru: Lru = usage.lru
        self._pins = pins
        self._metrics = metrics
        self._generation: int | None = None

    async def follow(self) -> None:
        """Rebuild the order when another process changed the stores since the last look
        (always, the first time); one index read otherwise."""
        generation = await self._index.generation()
        if generation == self._generation:
            return
        # Taken before the walk: a change made during it is looked at on the next pass.
        self._generation = generation
        await self.rebuild()

    async def rebuild(self) -> None:
        """Make the order match the stores: adopt what it lacks, drop what is gone. Entries
        already known keep their last use, which is newer than the records (written in
        batches); what is dropped was freed by someone else, so it is not counted evicted."""
        found: set[Key] = set()
        adopted = 0
        async for found_new in stored_content(self._store, self._index, self._lru, found):
            adopted += found_new.adopted
            self._lru.add(found_new.key, found_new.size, found_new.last_used)
        for key in [key for key, _ in self._lru.oldest() if key not in found]:
            # Stored by this server during the walk, after the walk passed it, is not gone.
            if not await present(self._store, self._index, key):
                self._lru.remove(key)
        self._lru.sort()
        await self._store.remeasure()
        if adopted:
            log.warning("adopted %d cached blobs that had no usage record", adopted)
        log.info("cache index: %d entries, %d bytes", len(self._lru), self._lru.total)

    async def evict(self) -> int:
        """One pass; returns the bytes freed."""
        await self.follow()
        if not self._due(time.time()):
            return 0  # the common pass, with no index read for the pins
        pinned = await self._pinned()
        victims = self._choose(time.time(), pinned)
        freed = evicted = 0
        for key in victims:
            if key in self._pins:
                continue  # in use since it was chosen
            entry = self._lru.remove(key)
            if entry is None or not await self._delete(key):
                continue  # gone already: another process freed those bytes, not this one
            freed += entry.size
            evicted += 1
            self._metrics.evictions.labels(key[0].value).inc()
            self._metrics.evicted_bytes.inc(entry.size)
        if evicted:
            log.info("evicted %d items, %d bytes", evicted, freed)
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

    async def _delete(self, key: Key) -> bool:
        """Whether there was something to delete."""
        return await delete_content(self._store, self._index, self._usage, key)


@dataclass(frozen=True, slots=True)
class Found:
    """Content found in the stores that the order lacked."""

    key: Key
    size: int
    last_used: float
    adopted: bool  # no usage record: a crash, or a command, can leave those


async def stored_content(
    store: BlobStore, index: Index, known: Container[Key], found: set[Key]
) -> AsyncIterator[Found]:
    """Every stored blob and manifest into ``found``; those not ``known``, yielded with their
    last use as recorded (a blob without records: when it was stored)."""
    async for digest in store.digests():
        key = (Kind.BLOB, digest)
        found.add(key)
        if key in known:
            continue
        info = await store.stat(digest)
        if info is None:
            continue
        uses = await index.references(Kind.BLOB, digest)
        yield Found(key, info.size, max(uses.values(), default=info.modified), not uses)
    async for digest, size in index.manifest_sizes():
        key = (Kind.MANIFEST, digest)
        found.add(key)
        if key not in known:
            uses = await index.references(Kind.MANIFEST, digest)
            yield Found(key, size, max(uses.values(), default=time.time()), False)


async def delete_content(store: BlobStore, index: Index, usage: Usage, key: Key) -> bool:
    """Delete a blob or a manifest and forget its uses; whether there was something to delete."""
    kind, digest = key
    if kind is Kind.BLOB:
        deleted = await store.delete(digest)
    else:
        deleted = await index.delete_manifest(digest)
    await usage.forget(kind, digest)
    return deleted


async def present(store: BlobStore, index: Index, key: Key) -> bool:
    kind, digest = key
    if kind is Kind.BLOB:
        return await store.stat(digest) is not None
    return await index.get_manifest(digest) is not None
