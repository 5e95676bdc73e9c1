"""Keeping the cache within ``cache.max_size`` and ``cache.max_age``, in the background.

Each pass takes victims from the cold end of the LRU order until the cache fits, passing
over what is in use (being served or downloaded) and what ``regcache warm --pin`` pinned, so
its cost grows with what it evicts, not with the size of the cache. Pins are read from the
index on every pass, as another process (warm, unpin) may change them at any time.

The order lives in SQLite beside the index (proxy.store.diskorder), kept by every process on
the cache directory as it stores and serves, so a server's memory does not grow with the
cache and a restart rebuilds nothing. Commands run beside the server (warm, import, rm, prune)
bump the index's change counter when they changed the stores (proxy.server.cacheparts); the
pass that finds it moved since the order last matched the stores walks them, in the
background, adopting what the order lacks (a blob without a usage record, which a crash can
leave, with the time it was stored as its last use) and dropping what is gone, which no pass
then counts as evicted. A cache filled by a version that kept the order in memory is walked
so once, at its first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Container, Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy import tasks
from proxy.cache.lru import Key, Pins
from proxy.cache.usage import Usage
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store import BlobStore, Index, IndexUnavailable, StoreUnavailable
from proxy.store.diskorder import DiskOrder, member
from proxy.store.redisorder import Ranked, RedisOrder

log = logging.getLogger(__name__)

# How often an idle server reads the index's change counter, so that what a command run beside
# it stored is evicted (and what it removed is no longer counted) without waiting for a request.
FOLLOW_EVERY = 10.0
# Read from the cold end of the order, and walk the stores, this many at a time.
PAGE = 100


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
        # The first pass at once, in the background: serving does not wait for it, nor for
        # the walk of the stores it makes when commands changed them.
        while True:
            try:
                await self.evict()
            except (StoreUnavailable, IndexUnavailable):
                pass  # the store logs its outage once; this pass would log it every time
            except Exception:
                log.exception("eviction pass failed; the next one will retry")
            # Age limits, and commands run beside the server, need a look now and then even
            # when nothing new arrives here.
            period = min(self.max_age / 10, FOLLOW_EVERY) if self.max_age else FOLLOW_EVERY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._usage.grew.wait()
            self._usage.grew.clear()

    @abstractmethod
    async def evict(self) -> int:
        """One pass; returns the bytes freed."""


class Evictor(EvictionLoop):
    """Eviction over the cache directory's order (proxy.store.diskorder), which every process
    on the directory keeps; one of them at a time runs a pass, under an exclusive lock on
    ``lock``, and the others skip theirs while it is held."""

    def __init__(
        self,
        store: BlobStore,
        index: Index,
        order: DiskOrder,
        usage: Usage,
        pins: Pins,
        metrics: Metrics,
        *,
        lock: Path,
        max_size: int | None,
        max_age: float | None,
    ) -> None:
        super().__init__(usage, max_size=max_size, max_age=max_age)
        self._store = store
        self._index = index
        self._order = order
        self._pins = pins
        self._metrics = metrics
        self._lock = lock

    async def evict(self) -> int:
        """One pass, if no other process is running one; returns the bytes freed."""
        await self._usage.flush()
        generation = await self._index.generation()
        matched = await self._order.matched_generation() == generation
        if matched and not await over_bounds(self, self._order, time.time()):
            return 0  # the common pass: three small reads
        with exclusive(self._lock) as held:
            if not held:
                return 0
            # Again under the lock: the process that held it before may have matched them.
            if await self._order.matched_generation() != generation:
                await self.match(generation)
            return await self._pass(time.time())

    async def _pass(self, now: float) -> int:
        freed = evicted = 0
        for ranked in await self._choose(now):
            if ranked.key in self._pins:
                continue  # in use since it was chosen
            deleted = await delete_content(self._store, self._index, self._usage, ranked.key)
            await self._order.removed(ranked.key)
            if not deleted:
                continue  # gone already: another process freed those bytes, not this one
            freed += ranked.size
            evicted += 1
            self._metrics.evictions.labels(ranked.key[0].value).inc()
            self._metrics.evicted_bytes.inc(ranked.size)
        if evicted:
            log.info("evicted %d items, %d bytes", evicted, freed)
        return freed

    async def _choose(self, now: float) -> list[Ranked]:
        """Victims, coldest first, passing over what is pinned. Chosen before any is deleted:
        what a response is sending when the pass begins is passed over even if the response
        ends during the deletions."""
        pinned = frozenset[Digest]().union(*(await self._index.pins()).values())
        excess = await self._order.total() - self.max_size if self.max_size is not None else 0
        oldest_allowed = now - self.max_age if self.max_age is not None else None
        victims: list[Ranked] = []
        start = 0
        while page := await self._order.oldest(start, PAGE):
            start += len(page)
            for ranked in page:
                too_old = oldest_allowed is not None and ranked.last_used < oldest_allowed
                if excess <= 0 and not too_old:
                    return victims
                if ranked.key in self._pins or ranked.key[1] in pinned:
                    continue
                victims.append(ranked)
                excess -= ranked.size
        return victims

    async def match(self, generation: int) -> None:
        """Make the order match the stores: adopt what it lacks, drop what is gone (freed by
        someone else, so not counted evicted). A page at a time, with the event loop free
        between pages: this runs beside serving, at the first start on a cache an older
        version filled and after commands changed the stores."""
        walk = time.time_ns()
        adopted = 0
        page: list[tuple[Key, int | None]] = []
        async for key, size in _stored_keys(self._store, self._index):
            page.append((key, size))
            if len(page) >= PAGE:
                adopted += await self._adopt(page, walk)
                page = []
        adopted += await self._adopt(page, walk)
        after = ""
        while unseen := await self._order.unseen(walk, PAGE, after):
            after = member(unseen[-1])
            for key in unseen:
                # Stored by some process after the walk passed it is not gone.
                if not await present(self._store, self._index, key):
                    await self._order.removed(key)
        await matched(self._order, self._store, generation, adopted)

    async def _adopt(self, page: list[tuple[Key, int | None]], walk: int) -> int:
        """Mark a page of what the walk found; put what the order lacks in it, with its last
        use as recorded (a blob without records: when it was stored). How many had none."""
        sizes = dict(page)
        new = await self._order.mark(sizes, walk)
        adopted = 0
        entries: dict[Key, tuple[int, float]] = {}
        for key in new:
            kind, digest = key
            size, modified = sizes[key], time.time()
            if size is None:
                info = await self._store.stat(digest)
                if info is None:
                    continue
                size, modified = info.size, info.modified
            uses = await self._index.references(kind, digest)
            adopted += kind is Kind.BLOB and not uses
            entries[key] = (size, max(uses.values(), default=modified))
        await self._order.stored(entries)
        await asyncio.sleep(0)
        return adopted


async def over_bounds(loop: EvictionLoop, order: DiskOrder | RedisOrder, now: float) -> bool:
    """Whether the cache is over a bound: too big, or its coldest entry too old."""
    if loop.max_size is not None and await order.total() > loop.max_size:
        return True
    if loop.max_age is None:
        return False
    coldest = await order.coldest()
    return coldest is not None and coldest < now - loop.max_age


async def matched(
    order: DiskOrder | RedisOrder, store: BlobStore, generation: int, adopted: int
) -> None:
    """The end of a walk that made the order match the stores as of ``generation``."""
    await order.matched(generation)
    await store.remeasure()
    if adopted:
        log.warning("adopted %d cached blobs that had no usage record", adopted)
    log.info("cache order: %d bytes", await order.total())


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """An exclusive lock on ``path`` if no one else holds it (True), for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # which releases the lock


async def _stored_keys(store: BlobStore, index: Index) -> AsyncIterator[tuple[Key, int | None]]:
    """Every stored blob (size unknown yet) and manifest (with its size)."""
    async for digest in store.digests():
        yield (Kind.BLOB, digest), None
    async for digest, size in index.manifest_sizes():
        yield (Kind.MANIFEST, digest), size


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
