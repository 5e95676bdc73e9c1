"""The cache's parts on one cache directory, put together in one place for the server and
for the commands that work on a cache directory themselves (warm, import, ls...).

Several processes may open the same directory at once: blobs are written to temporary files
and renamed into place, and the index is SQLite (diskcache), so a command run beside a
running server is seen by it at once. With ``index.backend: redis`` the index is in Redis
instead, where every process pointed at it sees it just as soon. A bounded cache's eviction
order is kept beside the index, by every process: in SQLite in the index directory
(proxy.store.diskorder), or in Redis (proxy.cache.fleeteviction). A command that stored or deleted
content bumps the index's change counter as it closes the cache, so that the next eviction
pass looks at the stores again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from proxy import tasks
from proxy.cache.blobs import BlobCache
from proxy.cache.eviction import EvictionLoop, Evictor
from proxy.cache.fleeteviction import FleetEvictor
from proxy.cache.fleetpins import PinPublisher, PublishedPins
from proxy.cache.localdownloads import FileFlight
from proxy.cache.lru import Pins
from proxy.cache.manifests import ManifestCache
from proxy.cache.usage import Usage
from proxy.config import Config
from proxy.fleet.leases import Holder, Leases
from proxy.fleet.peerclient import PeerClient
from proxy.metrics import Metrics
from proxy.routing import Router
from proxy.store import BlobStore, Index
from proxy.store.diskindex import DiskIndex
from proxy.store.diskorder import DiskOrder
from proxy.store.fsblobs import FsBlobStore
from proxy.store.redisindex import RedisIndex
from proxy.store.redisorder import RedisOrder
from proxy.upstream.client import UpstreamClient

# Per upstream response: aiohttp stops reading the socket at twice this much unread, which at
# its 64 KiB default stalls the upstream each time a chunk goes to disk.
UPSTREAM_READ_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class CacheParts:
    config: Config
    metrics: Metrics
    router: Router
    store: BlobStore
    index: Index
    clients: dict[str, UpstreamClient]
    usage: Usage
    pins: Pins
    manifests: ManifestCache
    blobs: BlobCache
    evictor: EvictionLoop | None
    # In a fleet (index.backend: redis): who does shared work, and does it once.
    leases: Leases | None = None


def _upstream_clients(
    config: Config, metrics: Metrics
) -> tuple[aiohttp.ClientSession, dict[str, UpstreamClient]]:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=64)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, read_bufsize=UPSTREAM_READ_BUFFER
    )
    clients = {
        up.name: UpstreamClient(up, session, metrics, offline=config.offline)
        for up in config.upstreams
    }
    return session, clients


@contextlib.asynccontextmanager
async def open_cache(
    config: Config, metrics: Metrics | None = None, *, evict: bool = True
) -> AsyncIterator[CacheParts]:
    """The cache at ``config.cache_dir``, with its upstream clients. ``evict``: keep house as
    the server does, running the evictor of a bounded cache and removing the temporary files
    interrupted writes left; a short-lived command leaves both to the server, whose downloads
    in flight those temporary files may be."""
    # Labelled with the replica's name where several share the backends (README, Scaling out).
    metrics = metrics or Metrics(config.replica if config.index_backend == "redis" else None)
    router = Router(config)
    exits = contextlib.AsyncExitStack()
    # A worker of several leaves the temporary files to the supervisor: they are its siblings'.
    worker = (config.workers or 1) > 1
    clean = evict and not worker
    store = await exits.enter_async_context(_blob_store(config, metrics, clean=clean))
    index = _open_index(config)
    session, clients = _upstream_clients(config, metrics)
    bounded = config.cache_max_size is not None or config.cache_max_age is not None
    leases = _leases(config, index, serving=evict)
    # Kept by commands too, so that what they store is in the order at once.
    order = _order(config, index) if bounded else None
    usage = Usage(index, metrics, order)
    recorder = asyncio.create_task(usage.run())
    # Published for the other replicas of a fleet; the processes on one cache directory pass
    # over each other's (a file being sent stays readable after it is unlinked).
    pins = PublishedPins() if isinstance(order, RedisOrder) and evict else Pins()
    evictor: EvictionLoop | None = None
    if bounded and evict:
        evictor = _evictor(config, store, index, order, usage, pins, leases, metrics)
        evictor.start()
    peers = _peers(config, session, metrics) if leases is not None else None
    redirect = config.storage_s3_redirect
    blobs = BlobCache(
        store, clients, metrics, usage, pins, redirect=redirect, leases=leases, peers=peers
    )
    if worker and leases is None and isinstance(store, FsBlobStore):
        blobs.downloads.flight = FileFlight(config.cache_dir, store, clients, metrics)
    manifests = ManifestCache(index, clients, metrics, usage, leases=leases)
    try:
        yield CacheParts(
            config, metrics, router, store, index, clients, usage, pins, manifests, blobs, evictor,
            leases,
        )  # fmt: skip
    finally:
        await tasks.stop(recorder)
        if evictor is not None:
            await evictor.stop()
        await blobs.downloads.close()
        await session.close()
        # Here rather than in each command, or at each write of the stores: every command that
        # changes the cache closes it, a server's own writes do not bump (it knows of them),
        # and a command that changed a thousand blobs costs the server one rebuild, not many.
        if not evict and (store.changes or index.changes):
            await index.bump_generation()
        if isinstance(order, DiskOrder):
            await order.close()
        await index.close()
        await exits.aclose()


@contextlib.asynccontextmanager
async def _blob_store(config: Config, metrics: Metrics, *, clean: bool) -> AsyncIterator[BlobStore]:
    """The blob store the config chooses, open. ``clean`` as for FsBlobStore.open."""
    if config.storage_backend == "local":
        local = FsBlobStore(config.cache_dir)
        await local.open(clean=clean)
        try:
            yield local
        finally:
            await local.close()
        return
    # Imported only for a bucket: aiobotocore and botocore take a third of a second of CPU to
    # import and about 10 MB in every process, which a server on the local store never needs.
    from proxy.store.s3blobs import S3BlobStore
    from proxy.store.s3calls import S3Location
    from proxy.store.tier import LocalTier
    from proxy.store.tiered import TieredBlobStore

    assert config.storage_s3_bucket is not None, "the config loader requires a bucket"
    location = S3Location(
        bucket=config.storage_s3_bucket,
        endpoint=config.storage_s3_endpoint,
        region=config.storage_s3_region,
        prefix=config.storage_s3_prefix or "",
        access_key_id=config.storage_s3_access_key_id,
        secret_access_key=config.storage_s3_secret_access_key,
    )
    # Downloads are spooled where the file store keeps its temporary files.
    bucket = S3BlobStore(location, config.cache_dir / "tmp")
    bucket.watch.count = lambda op, status: metrics.s3_requests.labels(op, status).inc()
    try:
        await bucket.open(clean=clean)
        # Only the server keeps the tier: its bound is one process's order, which a command
        # run beside it would not know of (and commands read few blobs twice).
        if config.storage_local_tier is None or not clean:
            yield bucket
        else:
            tier = LocalTier(config.cache_dir / "tier", config.storage_local_tier)
            await tier.open()
            yield TieredBlobStore(bucket, tier, lambda seen: metrics.local_tier.labels(seen).inc())
    finally:
        await bucket.close()


def _leases(config: Config, index: Index, *, serving: bool) -> Leases | None:
    """The fleet's leases, in the index's Redis; None without one. A command (not
    ``serving``) has no peer endpoint: it holds leases without a URL, and the replicas wait
    for it rather than follow it, at the server's address, a download it does not have."""
    if not isinstance(index, RedisIndex):
        return None
    me = Holder(config.replica, config.replica_advertise_url if serving else None)
    return Leases(index.redis, index.prefix, me)


def _peers(config: Config, session: aiohttp.ClientSession, metrics: Metrics) -> PeerClient:
    key = config.replica_secret_file.secret if config.replica_secret_file else None
    return PeerClient(session, key, config.replica, metrics)


def _open_index(config: Config) -> DiskIndex | RedisIndex:
    if config.index_backend == "redis":
        return RedisIndex(config.index_redis_url, config.index_redis_prefix)
    return DiskIndex(config.cache_dir / "index")


def _order(config: Config, index: Index) -> DiskOrder | RedisOrder:
    if isinstance(index, RedisIndex):
        return RedisOrder(index)
    return DiskOrder(config.cache_dir / "index" / "order.sqlite3")


def _evictor(
    config: Config,
    store: BlobStore,
    index: Index,
    order: DiskOrder | RedisOrder | None,
    usage: Usage,
    pins: Pins,
    leases: Leases | None,
    metrics: Metrics,
) -> EvictionLoop:
    """The evictor of a bounded cache: the fleet's with its order in Redis, the cache
    directory's else."""
    max_size, max_age = config.cache_max_size, config.cache_max_age
    if isinstance(order, DiskOrder):
        lock = config.cache_dir / ".locks" / "evictor"
        return Evictor(
            store, index, order, usage, pins, metrics, lock=lock, max_size=max_size,
            max_age=max_age,
        )  # fmt: skip
    assert isinstance(order, RedisOrder)
    assert isinstance(index, RedisIndex)
    publisher = None
    if isinstance(pins, PublishedPins):
        publisher = PinPublisher(pins, order, config.replica)
    return FleetEvictor(
        store,
        index,
        order,
        usage,
        pins,
        leases,
        metrics,
        publisher=publisher,
        max_size=max_size,
        max_age=max_age,
    )
