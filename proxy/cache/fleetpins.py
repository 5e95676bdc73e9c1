"""What this replica's responses are sending, told to the fleet, so that no replica's eviction
deletes it meanwhile.

Taking a pin stays an in-memory count (proxy.cache.lru.Pins): a response never waits for
Redis. A background task claims the content pinned since its last look in Redis, in one
write shortly after, renews the claims of what stays pinned, and drops what was let go
once the usage records (written in batches, every FLUSH_EVERY) carry its last use: until
they do, the fleet's order still ranks it by an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proxy.cache.lru import Key, Pins
from proxy.cache.usage import FLUSH_EVERY
from proxy.store import IndexUnavailable
from proxy.store.redisorder import RedisOrder

log = logging.getLogger(__name__)

# How long after a pin is taken it is claimed at the latest (plus the loop's delays): the
# evictor waits longer than this between choosing what to evict and deleting it.
CLAIM_DELAY = 0.1
# A claim expires this long after its last renewal: a dead replica's claims are gone then.
CLAIM_SECONDS = 5.0
RENEW_EVERY = CLAIM_SECONDS / 4
LINGER = FLUSH_EVERY + CLAIM_DELAY


class PublishedPins(Pins):
    """Pins that remember what was taken and let go since the publisher last looked."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: set[Key] = set()
        self.released: dict[Key, float] = {}
        self.changed = asyncio.Event()

    def acquire(self, key: Key) -> None:
        if key not in self:
            self.fresh.add(key)
            self.changed.set()
        super().acquire(key)

    def release(self, key: Key) -> None:
        super().release(key)
        if key not in self:
            self.released[key] = time.monotonic()

    def held(self) -> set[Key]:
        return set(self._counts)


class PinPublisher:
    def __init__(self, pins: PublishedPins, order: RedisOrder, replica: str) -> None:
        self._pins = pins
        self._order = order
        self._replica = replica

    async def run(self) -> None:
        """Publish until cancelled."""
        renewed = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_EVERY):
                    await self._pins.changed.wait()
            # Pins taken together (a pull's layers) are claimed in one write.
            await asyncio.sleep(CLAIM_DELAY)
            self._pins.changed.clear()
            renew = time.monotonic() - renewed >= RENEW_EVERY
            try:
                await self.publish(renew)
            except IndexUnavailable:
                continue  # logged once by the index's reach; claimed again when it is back
            except Exception:
                # Stopping would leave this replica's responses unclaimed for good.
                log.exception("could not claim the content in use; trying again")
                continue
            if renew:
                renewed = time.monotonic()

    async def publish(self, renew: bool) -> None:
        """Claim what was pinned since the last time (everything still pinned, with
        ``renew``), and drop the claims on what was let go long enough ago."""
        pins = self._pins
        fresh, pins.fresh = pins.fresh, set()
        claims = set(fresh)
        releases: list[Key] = []
        if renew:
            claims |= pins.held()
            now = time.monotonic()
            for key, when in list(pins.released.items()):
                if key in pins:
                    del pins.released[key]  # taken again: claimed again
                elif now - when > LINGER:
                    del pins.released[key]
                    releases.append(key)
        if not claims and not releases:
            return
        try:
            await self._order.claim(self._replica, claims, releases, CLAIM_SECONDS)
        except IndexUnavailable:
            pins.fresh |= fresh
            raise
