"""The index in Redis, shared by every replica (and command) pointed at the same Redis.

Every key starts with a prefix (``regcache:`` by default), so one Redis can hold the
indexes of several caches. The layout:

- ``<prefix>manifest:<digest>``: a hash of the media type and the body, byte for byte;
  ``<prefix>manifest-sizes``: digest -> body size, written in the same transaction, so
  that listing sizes never reads the bodies.
- ``<prefix>tags``: one hash, the tag key's JSON -> the entry's JSON. A hash rather than a
  key per tag, so that listing is an HSCAN of it rather than a SCAN of the whole Redis.
- ``<prefix>use:<kind>:<digest>``: a hash, the (upstream, repository) JSON -> last use.
- ``<prefix>pins``: a hash, the pinned image's name -> its digests' JSON.
- ``<prefix>generation``: the change counter, an integer INCR bumps.

Keys are never given an expiry: eviction is regcache's decision, as with the disk index,
so the Redis must not evict them either (``maxmemory-policy noeviction``, its default).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store import Index, IndexUnavailable
from proxy.store.memory import check_manifest
from proxy.store.redisurl import open_redis

if TYPE_CHECKING:
    # redis itself is imported where it is first needed (open_redis, the error handlers):
    # a server on the disk index never loads it, which saves a fifth of a second of start-up
    # and megabytes per worker; these modules are imported by it all the same.
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "regcache:"
# Without them a Redis that stops answering (a paused VM, a partition) would hold every
# request that reads the index for as long as it lasts; a failure is answered as a miss
# instead. ``?socket_timeout=`` and ``?socket_connect_timeout=`` in the URL override them.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")

# Keeps the later of two uses in one step on the server: replicas record uses of the same
# content concurrently, and a read-then-write from the client would let an older time
# overwrite a newer one.
_RECORD_USE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current or tonumber(current) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
"""


def reaching(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis' errors as the store's IndexUnavailable, which the cache rides out (a write
    counted and skipped, a reference asked of the upstream) as it does a full disk."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        from redis.exceptions import RedisError

        reach = cast(RedisIndex, args[0]).reach
        try:
            answer = await method(*args, **kwargs)
        except RedisError as exc:
            reach.failed(exc)
            raise IndexUnavailable(f"Redis: {exc}") from exc
        reach.reached()
        return answer

    return call


def reaching_each(method: Callable[P, AsyncIterator[Y]]) -> Callable[P, AsyncIterator[Y]]:
    """``reaching`` for a listing, which talks to Redis between the items it yields."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Y]:
        from redis.exceptions import RedisError

        reach = cast(RedisIndex, args[0]).reach
        try:
            async for item in method(*args, **kwargs):
                yield item
        except RedisError as exc:
            reach.failed(exc)
            raise IndexUnavailable(f"Redis: {exc}") from exc
        reach.reached()

    return call


class RedisReach:
    """Whether Redis answers, logged as that changes: while it is out, every pull would
    otherwise log its failures (the cache logs IndexUnavailable quietly)."""

    def __init__(self) -> None:
        self.unreachable = False

    def failed(self, error: RedisError) -> None:
        if not self.unreachable:
            log.warning(
                "Redis index unreachable (%s): serving without caching manifests and tags "
                "until it is back",
                error,
            )
        self.unreachable = True

    def reached(self) -> None:
        if self.unreachable:
            log.info("Redis index reachable again")
        self.unreachable = False


def _tag_field(key: TagKey) -> str:
    # JSON keeps the accept tuple a tuple: ("a", "b") and ("a,b",) stay two keys.
    return json.dumps([key.upstream, key.repository, key.tag, key.accept])


def _ref_field(ref: RepoRef) -> str:
    return json.dumps([ref.upstream, ref.repository])


class RedisIndex(Index):
    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        # Bytes in and out: manifest bodies must come back byte-identical.
        self._redis: Redis = open_redis(
            url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
        )
        self._prefix = prefix
        self._sizes_key = f"{prefix}manifest-sizes"
        self._tags_key = f"{prefix}tags"
        self._pins_key = f"{prefix}pins"
        self._generation_key = f"{prefix}generation"
        self._record_use = self._redis.register_script(_RECORD_USE)
        self.reach = RedisReach()
        # Manifests this process stored or deleted: whether a command must tell a running server.
        self.changes = 0

    @property
    def redis(self) -> Redis:
        """The connection pool, for what else the replicas share through this Redis (leases)."""
        return self._redis

    @property
    def prefix(self) -> str:
        return self._prefix

    def _manifest_key(self, digest: Digest) -> str:
        return f"{self._prefix}manifest:{digest}"

    def _use_key(self, kind: Kind, digest: Digest) -> str:
        return f"{self._prefix}use:{kind.value}:{digest}"

    @reaching
    async def get_manifest(self, digest: Digest) -> StoredManifest | None:
        media_type, body = await self._redis.hmget(self._manifest_key(digest), ["type", "body"])
        if media_type is None or body is None:
            return None
        assert isinstance(body, bytes)  # the client never decodes (decode_responses=False)
        return StoredManifest(digest, _text(media_type), body)

    @reaching
    async def put_manifest(self, manifest: StoredManifest) -> None:
        check_manifest(manifest)
        fields = {"type": manifest.media_type, "body": manifest.body}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._manifest_key(manifest.digest), mapping=fields)  # type: ignore[arg-type]
            pipe.hset(self._sizes_key, str(manifest.digest), len(manifest.body))
            await pipe.execute()
        self.changes += 1

    @reaching
    async def delete_manifest(self, digest: Digest) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._manifest_key(digest))
            pipe.hdel(self._sizes_key, str(digest))
            deleted, _ = await pipe.execute()
        self.changes += bool(deleted)
        return bool(deleted)

    @reaching_each
    async def manifest_sizes(self) -> AsyncIterator[tuple[Digest, int]]:
        async for digest, size in self._redis.hscan_iter(self._sizes_key):
            yield Digest.parse(_text(digest)), int(size)

    @reaching
    async def get_tag(self, key: TagKey) -> TagEntry | None:
        value = await self._redis.hget(self._tags_key, _tag_field(key))
        return None if value is None else _tag_entry(value)

    @reaching
    async def put_tag(self, key: TagKey, entry: TagEntry) -> None:
        value = json.dumps([str(entry.digest), entry.media_type, entry.size, entry.checked_at])
        await self._redis.hset(self._tags_key, _tag_field(key), value)

    @reaching
    async def delete_tag(self, key: TagKey) -> None:
        await self._redis.hdel(self._tags_key, _tag_field(key))

    @reaching_each
    async def tags(self) -> AsyncIterator[tuple[TagKey, TagEntry]]:
        async for field, value in self._redis.hscan_iter(self._tags_key):
            upstream, repository, tag, accept = json.loads(field)
            yield TagKey(upstream, repository, tag, tuple(accept)), _tag_entry(value)

    @reaching
    async def put_pin(self, name: str, contents: frozenset[Digest]) -> None:
        # A field per pin: HSET and HDEL change one pin atomically, beside warm and unpin
        # run from other processes.
        value = json.dumps(sorted(str(digest) for digest in contents))
        await self._redis.hset(self._pins_key, name, value)

    @reaching
    async def delete_pin(self, name: str) -> bool:
        return bool(await self._redis.hdel(self._pins_key, name))

    @reaching
    async def pins(self) -> dict[str, frozenset[Digest]]:
        stored = await self._redis.hgetall(self._pins_key)
        return {
            _text(name): frozenset(Digest.parse(d) for d in json.loads(digests))
            for name, digests in stored.items()
        }

    @reaching
    async def record_use(self, kind: Kind, digest: Digest, ref: RepoRef, when: float) -> None:
        # repr: the shortest text that reads back as the same float.
        key = self._use_key(kind, digest)
        await self._record_use(keys=[key], args=[_ref_field(ref), repr(when)])

    @reaching
    async def references(self, kind: Kind, digest: Digest) -> dict[RepoRef, float]:
        stored = await self._redis.hgetall(self._use_key(kind, digest))
        return {_ref(field): float(when) for field, when in stored.items()}

    @reaching
    async def forget(self, kind: Kind, digest: Digest) -> None:
        await self._redis.delete(self._use_key(kind, digest))

    @reaching
    async def generation(self) -> int:
        return int(await self._redis.get(self._generation_key) or 0)

    @reaching
    async def bump_generation(self) -> int:
        return int(await self._redis.incr(self._generation_key))

    @reaching
    async def check(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tag_entry(value: bytes | str) -> TagEntry:
    digest, media_type, size, checked_at = json.loads(value)
    return TagEntry(Digest.parse(digest), media_type, size, checked_at)


def _ref(field: bytes | str) -> RepoRef:
    upstream, repository = json.loads(field)
    return RepoRef(upstream, repository)
