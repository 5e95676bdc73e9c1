"""Failed logins counted in Redis, so that a client guessing passwords limits itself as much
by spreading its guesses over the replicas of a fleet as by sending them all to one.

Each address has a sorted set ``<prefix>login-failures:<address>`` of its failures' times,
trimmed to the last ``limit`` and expiring with the window, so that Redis holds no more
than the failures of the last window. The times are the replicas' clocks: a few
milliseconds apart matter nothing against a window of a minute.

Redis out of reach falls back to the replica's own limiter in memory, which counts every
failure too: nobody is locked out, no Redis error reaches a client, and the guesses sent to
this replica during the outage are still limited. The outage is logged once, and Redis is
asked again every ``RETRY_SECONDS`` meanwhile, not at every login.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import TYPE_CHECKING

from proxy.auth.ratelimit import FailureLimiter, Limiter
from proxy.store import Index
from proxy.store.redisindex import RedisIndex

if TYPE_CHECKING:
    # redis is imported where it is used: only a server on a Redis index loads it.
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def failure_limiter(index: Index, limit: int = 10, window: float = 60.0) -> Limiter:
    """The fleet's limiter when the index is shared in Redis, else the replica's own."""
    if isinstance(index, RedisIndex):
        return SharedFailureLimiter(index.redis, index.prefix, limit, window)
    return FailureLimiter(limit, window)


class SharedFailureLimiter:
    def __init__(self, redis: Redis, prefix: str, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._redis = redis
        self._prefix = f"{prefix}login-failures:"
        self._local = FailureLimiter(limit, window)
        self._out = False
        self._tried_at = 0.0

    async def retry_after(self, address: str) -> int | None:
        if self._skip():
            return await self._local.retry_after(address)
        from redis.exceptions import RedisError

        now = time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self._prefix + address, "-inf", now - self.window)
                pipe.zrange(self._prefix + address, 0, 0, withscores=True)
                pipe.zcard(self._prefix + address)
                _, oldest, count = await pipe.execute()
        except RedisError as exc:
            self._lost(exc)
            return await self._local.retry_after(address)
        self._reached()
        if count < self.limit or not oldest:
            return None
        return max(1, math.ceil(float(oldest[0][1]) + self.window - now))

    async def failed(self, address: str) -> None:
        await self._local.failed(address)
        if self._skip():
            return
        from redis.exceptions import RedisError

        now = time.time()
        # Unique, so that two failures in the same instant are two.
        member = f"{now!r}:{secrets.token_hex(4)}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self._prefix + address, {member: now})
                pipe.zremrangebyrank(self._prefix + address, 0, -self.limit - 1)
                pipe.pexpire(self._prefix + address, math.ceil(self.window * 1000))
                await pipe.execute()
        except RedisError as exc:
            self._lost(exc)
            return
        self._reached()

    def _skip(self) -> bool:
        """Whether Redis is known to be out, and not due to be tried again yet."""
        return self._out and time.monotonic() - self._tried_at < RETRY_SECONDS

    def _lost(self, error: RedisError) -> None:
        if not self._out:
            log.warning(
                "Redis out of reach (%s): failed logins are limited per replica until it is back",
                error,
            )
        self._out = True
        self._tried_at = time.monotonic()

    def _reached(self) -> None:
        if self._out:
            log.info("Redis reachable again: failed logins are limited across the fleet")
        self._out = False
