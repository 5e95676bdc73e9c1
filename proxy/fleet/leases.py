"""Leases in Redis: one holder per key at a time, for as long as it keeps renewing.

A lease is a key set only if absent, with an expiry, holding who took it (the replica's
name, the URL its peers reach it at, and a random token). The holder renews it while the
work goes on, and deletes it when done; a holder that dies (SIGKILL, a lost node) stops
renewing, so the lease expires after ``ttl`` and another replica may take the work over.
Renewal and release compare the token on the server, in one script each, so that a holder
that stalled past its expiry never extends or deletes a lease someone else took since.

Redis being out of reach raises IndexUnavailable: the caller then does the work itself,
unshared, as the cache rides out every Redis outage. While Redis is known to be out, calls
fail at once, with one attempt every ``RETRY_SECONDS`` to notice it is back, so that an
outage does not add a timeout to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from proxy import tasks
from proxy.store import IndexUnavailable

if TYPE_CHECKING:
    # redis is imported where it is used: a server on the disk index never loads it, which
    # costs a fifth of a second at start and megabytes in every worker.
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# How long a dead holder keeps its lease: the wait before a takeover.
LEASE_SECONDS = 3.0
# Renewed this often, so that two renewals may fail (a slow Redis) before it expires.
RENEW_EVERY = LEASE_SECONDS / 3
RETRY_SECONDS = 2.0
# How often a waiter looks whether the holder let go: the delay it adds to a shared
# revalidation is at most this.
POLL_SECONDS = 0.05

T = TypeVar("T")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def blob_lease(digest: object) -> str:
    """The lease on a blob's download: held by the replica fetching it, and checked by the
    evictor, which must not delete a blob being stored."""
    return f"blob:{digest}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: a replica's name, and where its peers reach it (None: nowhere)."""

    replica: str
    url: str | None


class Lease:
    """A lease this replica holds. ``lost`` turns true when a renewal finds it gone."""

    def __init__(self, leases: Leases, key: str, value: bytes, ttl: float) -> None:
        self._leases = leases
        self.key = key
        self._value = value
        self._ttl = ttl
        self.lost = False

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer this replica's."""
        kept = await self._leases.call(
            self._leases.renew_script(keys=[self.key], args=[self._value, int(self._ttl * 1000)])
        )
        if not kept:
            self.lost = True
        return bool(kept)

    async def release(self) -> None:
        """Let go, so a waiting replica goes on at once rather than after the expiry. A
        Redis out of reach lets the lease expire by itself."""
        with contextlib.suppress(IndexUnavailable):
            await self._leases.call(
                self._leases.release_script(keys=[self.key], args=[self._value])
            )

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[Lease]:
        """Renewed in the background until the block ends, then released."""
        renewing = asyncio.create_task(self._keep_renewing())
        try:
            yield self
        finally:
            await tasks.stop(renewing)
            await self.release()

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                if not await self.renew():
                    log.warning("lease %s was lost: another replica may redo the work", self.key)
                    return
            except IndexUnavailable:
                continue  # Redis is logged by the index; the lease may outlive a short outage


class Leases:
    """Leases under ``<prefix>lease:`` in the Redis the index uses."""

    def __init__(self, redis: Redis, prefix: str, me: Holder, ttl: float = LEASE_SECONDS) -> None:
        self._redis = redis
        self._prefix = f"{prefix}lease:"
        self.me = me
        self.ttl = ttl
        self.renew_script = redis.register_script(_RENEW)
        self.release_script = redis.register_script(_RELEASE)
        self._failed_at: float | None = None

    async def acquire(self, name: str, ttl: float | None = None) -> Lease | None:
        """The lease on ``name``, or None when another holds it."""
        ttl = ttl or self.ttl
        key = self._prefix + name
        value = json.dumps(
            {"replica": self.me.replica, "url": self.me.url, "token": secrets.token_hex(8)}
        ).encode()
        taken = await self.call(self._redis.set(key, value, nx=True, px=int(ttl * 1000)))
        return Lease(self, key, value, ttl) if taken else None

    async def holder(self, name: str) -> Holder | None:
        """Who holds the lease on ``name`` now; None when nobody does."""
        value = await self.call(self._redis.get(self._prefix + name))
        if value is None:
            return None
        try:
            found = json.loads(value)
            return Holder(str(found["replica"]), found["url"] and str(found["url"]))
        except (ValueError, KeyError, TypeError):
            return Holder("?", None)  # not one of ours; still held

    async def wait_released(self, name: str, patience: float) -> bool:
        """Wait until nobody holds ``name``; False when ``patience`` ran out first."""
        deadline = time.monotonic() + patience
        while await self.holder(name) is not None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    async def call(self, command: Awaitable[T]) -> T:
        """One Redis command, its failure as IndexUnavailable; at once while Redis is out."""
        now = time.monotonic()
        if self._failed_at is not None and now - self._failed_at < RETRY_SECONDS:
            if asyncio.iscoroutine(command):
                command.close()
            raise IndexUnavailable("Redis is out of reach")
        from redis.exceptions import RedisError

        try:
            answer = await command
        except RedisError as exc:
            self._failed_at = now
            raise IndexUnavailable(f"Redis: {exc}") from exc
        self._failed_at = None
        return answer


async def run_once(
    leases: Leases | None, name: str, work: Callable[[], Awaitable[T]], wait: float
) -> T:
    """``work`` done by one replica at a time for ``name``: run it under the lease, or wait
    for the replica holding it to finish and then run it (finding its result in the shared
    index, typically, and doing nothing more). Unshared when there are no leases, when
    Redis is out, or when the holder takes longer than ``wait``."""
    if leases is None:
        return await work()
    try:
        lease = await leases.acquire(name)
        if lease is None:
            await leases.wait_released(name, wait)
            lease = await leases.acquire(name)
    except IndexUnavailable:
        return await work()
    if lease is None:
        return await work()  # the holder is slow or gone: go on without it
    async with lease.kept():
        return await work()
