"""The fleet's eviction order in the Redis of its index: what the shared store holds, how big
each piece is, when the fleet last used it, and what some replica is using right now.

Keys, beside the index's (proxy.store.redisindex):

- ``<prefix>lru``: a sorted set, ``<kind>:<digest>`` -> last use (unix time). A use only ever
  moves the score later (``ZADD GT``), and only of content that is stored (``XX``): the
  replicas record uses in batches, in any order.
- ``<prefix>lru-sizes``: a hash, ``<kind>:<digest>`` -> size; ``<prefix>lru-total`` the sum
  of its values. Both change only in scripts, so that two replicas storing one digest
  count it once, and the fleet's total is known without listing the bucket.
- ``<prefix>lru-generation``: the index's change counter when the order was last made to
  match the stores; a different one (or none: a new or emptied Redis) means the evictor must
  walk the stores again, as commands run beside the fleet changed them.
- ``<prefix>in-use:<replica>``: a sorted set per replica, content its responses are sending
  -> when that claim expires (Redis' clock, in ms), and ``<prefix>in-use-replicas``, the
  replicas with such a set -> the same. A replica that dies stops refreshing its claims,
  which then expire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store.redisindex import RedisIndex, RedisReach, reaching, reaching_each

if TYPE_CHECKING:
    from redis.asyncio import Redis

Key = tuple[Kind, Digest]

_STORED = """
for i = 1, #ARGV, 3 do
    if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
        redis.call('INCRBY', KEYS[3], ARGV[i + 1])
    end
    redis.call('ZADD', KEYS[2], 'GT', ARGV[i + 2], ARGV[i])
end
"""
_REMOVED = """
local size = redis.call('HGET', KEYS[1], ARGV[1])
if size then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('DECRBY', KEYS[3], size)
end
redis.call('ZREM', KEYS[2], ARGV[1])
"""
# Oldest first, with sizes: one round trip for a page of candidates.
_OLDEST = """
local found = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')
local answer = {}
for i = 1, #found, 2 do
    local size = redis.call('HGET', KEYS[1], found[i]) or '0'
    table.insert(answer, found[i])
    table.insert(answer, found[i + 1])
    table.insert(answer, size)
end
return answer
"""
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: replicas, this replica's set. ARGV: replica, ttl ms, count of claims, claims...,
# releases...
_CLAIM = (
    _NOW_MS
    + """
local expiry = now + tonumber(ARGV[2])
local claims = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
for i = 4, 3 + claims do
    redis.call('ZADD', KEYS[2], expiry, ARGV[i])
end
for i = 4 + claims, #ARGV do
    redis.call('ZREM', KEYS[2], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
"""
)
# KEYS: replicas. ARGV: the prefix of the replicas' sets, members... Every replica's set is
# read in here, in one step: the list of replicas is only known on the server.
_IN_USE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local busy = {}
for _, replica in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local members = {unpack(ARGV, 2)}
    local scores = redis.call('ZMSCORE', ARGV[1] .. replica, unpack(members))
    for i, score in ipairs(scores) do
        if score and tonumber(score) > now then
            busy[members[i]] = true
        end
    end
end
local answer = {}
for member, _ in pairs(busy) do
    table.insert(answer, member)
end
return answer
"""
)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One piece of stored content in the fleet's order."""

    key: Key
    size: int
    last_used: float


def _member(key: Key) -> str:
    return f"{key[0].value}:{key[1]}"


def _key(member: bytes | str) -> Key:
    text = member.decode() if isinstance(member, bytes) else member
    kind, digest = text.split(":", 1)
    return Kind(kind), Digest.parse(digest)


class RedisOrder:
    """The order over a RedisIndex's Redis; its outages are the index's (``reach``)."""

    def __init__(self, index: RedisIndex) -> None:
        self._redis: Redis = index.redis
        self.reach: RedisReach = index.reach
        prefix = index.prefix
        self._lru = f"{prefix}lru"
        self._sizes = f"{prefix}lru-sizes"
        self._total = f"{prefix}lru-total"
        self._generation = f"{prefix}lru-generation"
        self._replicas = f"{prefix}in-use-replicas"
        self._in_use_prefix = f"{prefix}in-use:"
        self._stored = self._redis.register_script(_STORED)
        self._removed = self._redis.register_script(_REMOVED)
        self._oldest = self._redis.register_script(_OLDEST)
        self._claim = self._redis.register_script(_CLAIM)
        self._in_use = self._redis.register_script(_IN_USE)

    @reaching
    async def stored(self, entries: Mapping[Key, tuple[int, float]]) -> None:
        """Content stored (or found stored), with its size and last use; counted once however
        many times, and by however many replicas, it is recorded."""
        if not entries:
            return
        args: list[str | int | float] = []
        for key, (size, when) in entries.items():
            args += [_member(key), size, repr(when)]
        await self._stored(keys=[self._sizes, self._lru, self._total], args=args)

    @reaching
    async def used(self, uses: Mapping[Key, float]) -> None:
        """Last uses, each kept only if later than the recorded one, of stored content."""
        if uses:
            scores = {_member(key): when for key, when in uses.items()}
            await self._redis.zadd(self._lru, scores, xx=True, gt=True)

    @reaching
    async def removed(self, key: Key) -> None:
        await self._removed(keys=[self._sizes, self._lru, self._total], args=[_member(key)])

    @reaching
    async def total(self) -> int:
        return int(await self._redis.get(self._total) or 0)

    @reaching
    async def coldest(self) -> float | None:
        """The last use of the least recently used content, None when nothing is stored."""
        found = await self._redis.zrange(self._lru, 0, 0, withscores=True)
        return float(found[0][1]) if found else None

    @reaching
    async def oldest(self, start: int, count: int) -> list[Ranked]:
        """Entries ``start`` to ``start + count``, least recently used first."""
        found = await self._oldest(keys=[self._sizes, self._lru], args=[start, start + count - 1])
        return [
            Ranked(_key(found[i]), int(found[i + 2]), float(found[i + 1]))
            for i in range(0, len(found), 3)
        ]

    @reaching_each
    async def entries(self) -> AsyncIterator[Key]:
        """Every key the order holds; for a walk of the stores that makes it match them."""
        async for member, _ in self._redis.hscan_iter(self._sizes):
            yield _key(member)

    @reaching
    async def size(self, key: Key) -> int | None:
        found = await self._redis.hget(self._sizes, _member(key))
        return None if found is None else int(found)

    @reaching
    async def matched_generation(self) -> int | None:
        """The index's change counter when the order last matched the stores."""
        found = await self._redis.get(self._generation)
        return None if found is None else int(found)

    @reaching
    async def matched(self, generation: int) -> None:
        await self._redis.set(self._generation, generation)

    @reaching
    async def claim(
        self, replica: str, claims: Iterable[Key], releases: Iterable[Key], ttl: float
    ) -> None:
        """Content this replica is using, for ``ttl`` seconds unless claimed again, and
        content it no longer uses."""
        claimed = [_member(key) for key in claims]
        args: list[str | int] = [replica, int(ttl * 1000), len(claimed), *claimed]
        args += [_member(key) for key in releases]
        await self._claim(keys=[self._replicas, self._in_use_prefix + replica], args=args)

    @reaching
    async def in_use(self, keys: Iterable[Key]) -> set[Key]:
        """Which of ``keys`` some replica claims to be using."""
        members = [_member(key) for key in keys]
        if not members:
            return set()
        busy = await self._in_use(keys=[self._replicas], args=[self._in_use_prefix, *members])
        return {_key(member) for member in busy}
