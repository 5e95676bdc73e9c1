"""Eviction across a fleet sharing one Redis (index.backend: redis) and one store.

``cache.max_size`` and ``cache.max_age`` bound what the fleet holds together: the order, the
sizes and their total live in Redis (proxy.store.redisorder), written by every replica as it
stores and serves. One replica at a time runs a pass, under the lease ``evictor``; the others
skip theirs while it is held. A pass never deletes what any replica is sending (its pins,
claimed in Redis by proxy.cache.fleetpins), downloading (a ``blob:<digest>`` lease), or what
``regcache warm --pin`` pinned. Without Redis there is no pass at all: deleting from a shared
store without knowing who uses what is what this must never do.

Commands run beside the fleet (warm, import, rm, prune) bump the index's change counter; the
pass that finds it moved since the order last matched the stores walks them once for the whole
fleet, adopting what the order lacks and dropping what is gone, as Evictor.rebuild does.
"""

from __future__ import annotations

import asyncio
import logging
import time

from proxy import tasks
from proxy.cache.eviction import (
    EvictionLoop,
    delete_content,
    matched,
    over_bounds,
    present,
    stored_content,
)
from proxy.cache.fleetpins import CLAIM_DELAY, PinPublisher
from proxy.cache.lru import Key, Pins
from proxy.cache.usage import Usage
from proxy.fleet.leases import Lease, Leases, blob_lease
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store import BlobStore
from proxy.store.redisindex import RedisIndex
from proxy.store.redisorder import Ranked, RedisOrder

log = logging.getLogger(__name__)

EVICTOR_LEASE = "evictor"
# Read from the cold end of the order this many at a time.
PAGE = 100
# Between choosing victims and deleting them: long enough for a pin taken on another replica
# just before the choice to be claimed in Redis, where the second look finds it.
SETTLE = 3 * CLAIM_DELAY


class FleetEvictor(EvictionLoop):
    def __init__(
        self,
        store: BlobStore,
        index: RedisIndex,
        order: RedisOrder,
        usage: Usage,
        pins: Pins,
        leases: Leases | None,
        metrics: Metrics,
        *,
        max_size: int | None,
        max_age: float | None,
        publisher: PinPublisher | None = None,
    ) -> None:
        super().__init__(usage, max_size=max_size, max_age=max_age)
        self._store = store
        self._index = index
        self._order = order
        self._pins = pins
        self._leases = leases
        self._metrics = metrics
        self._publisher = publisher
        self._publishing: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._publisher is not None:
            self._publishing = asyncio.create_task(self._publisher.run())
        super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._publishing is not None:
            await tasks.stop(self._publishing)

    async def evict(self) -> int:
        """One pass, if this replica gets the lease; returns the bytes it freed."""
        # The index's reach logs an outage once; the loop then skips the pass quietly.
        generation = await self._index.generation()
        await self._usage.flush()
        matched = await self._order.matched_generation() == generation
        if matched and not await over_bounds(self, self._order, time.time()):
            return 0
        if self._leases is None:
            return await self._pass(generation, None)
        lease = await self._leases.acquire(EVICTOR_LEASE)
        if lease is None:
            return 0  # another replica is evicting
        async with lease.kept():
            return await self._pass(generation, lease)

    async def _pass(self, generation: int, lease: Lease | None) -> int:
        # Again under the lease: the replica that held it before may have matched them.
        if await self._order.matched_generation() != generation:
            await self.match(generation)
        victims = await self._choose(time.time())
        if not victims:
            return 0
        await asyncio.sleep(SETTLE)
        busy = await self._busy([victim.key for victim in victims])
        freed = evicted = 0
        for victim in victims:
            if lease is not None and lease.lost:
                break  # another replica may be evicting now: it chooses for itself
            if victim.key in busy or victim.key in self._pins:
                continue
            if await self._downloading(victim.key) or not await self._delete(victim.key):
                continue
            freed += victim.size
            evicted += 1
            self._metrics.evictions.labels(victim.key[0].value).inc()
            self._metrics.evicted_bytes.inc(victim.size)
        if evicted:
            log.info("evicted %d items, %d bytes, for the fleet", evicted, freed)
        return freed

    async def _choose(self, now: float) -> list[Ranked]:
        """Victims, coldest first, passing over what is pinned, in use or downloading
        anywhere (looked at again before each deletion)."""
        pinned = frozenset[Digest]().union(*(await self._index.pins()).values())
        total = await self._order.total()
        excess = total - self.max_size if self.max_size is not None else 0
        oldest_allowed = now - self.max_age if self.max_age is not None else None
        victims: list[Ranked] = []
        start = 0
        while page := await self._order.oldest(start, PAGE):
            start += len(page)
            busy = await self._busy([ranked.key for ranked in page])
            for ranked in page:
                too_old = oldest_allowed is not None and ranked.last_used < oldest_allowed
                if excess <= 0 and not too_old:
                    return victims
                if ranked.key in busy or ranked.key[1] in pinned:
                    continue
                if await self._downloading(ranked.key):
                    continue
                victims.append(ranked)
                excess -= ranked.size
        return victims

    async def _busy(self, keys: list[Key]) -> set[Key]:
        """Which of ``keys`` a response is sending, here or on any replica."""
        return await self._order.in_use(keys) | {key for key in keys if key in self._pins}

    async def _downloading(self, key: Key) -> bool:
        kind, digest = key
        if kind is not Kind.BLOB or self._leases is None:
            return False
        return await self._leases.holder(blob_lease(digest)) is not None

    async def _delete(self, key: Key) -> bool:
        """Whether there was something to delete. Gone already or not, the order forgets it."""
        deleted = await delete_content(self._store, self._index, self._usage, key)
        await self._order.removed(key)
        return deleted

    async def match(self, generation: int) -> None:
        """Make the order match the stores: adopt what it lacks, drop what is gone. For the
        whole fleet, once per change of the counter (``generation``, read before the walk)."""
        known = {key async for key in self._order.entries()}
        found: set[Key] = set()
        adopted = 0
        batch: dict[Key, tuple[int, float]] = {}
        async for found_new in stored_content(self._store, self._index, known, found):
            adopted += found_new.adopted
            batch[found_new.key] = (found_new.size, found_new.last_used)
            if len(batch) >= PAGE:
                await self._order.stored(batch)
                batch = {}
        await self._order.stored(batch)
        for key in known - found:
            # Stored by some replica after the walk passed it is not gone.
            if not await present(self._store, self._index, key):
                await self._order.removed(key)
        await matched(self._order, self._store, generation, adopted)
