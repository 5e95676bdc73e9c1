"""The fast suite: regcache's application in the test's event loop, in front of the fake
registry of tests.support.fakeregistry, both on 127.0.0.1 and started in milliseconds.

Tests here drive regcache through its HTTP API only. The few internals they must touch (a
backoff constant, how often eviction looks for other processes' changes, the point where
ENOSPC is injected) are patched in fixtures below and nowhere else, so that a refactor of the
internals means repointing one fixture.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import io
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

import proxy.cache.eviction
import proxy.upstream.blobstream
from proxy.cli import build_parser
from proxy.commands.export import export
from proxy.commands.importbundle import import_bundle
from proxy.commands.inventory import inventory
from proxy.config.authfiles import TokenKey
from proxy.store.diskindex import DiskIndex
from proxy.store.spool import Spool
from tests.support.bundlefiles import IMAGE, Run
from tests.support.ceph import CephCluster
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache, make_config
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer

KIB = 1024
MIB = 1024 * KIB
ProxyFactory = Callable[..., Awaitable[InProcessRegcache]]
# ``await start_replica(name, **settings)``: see the fixture.
StartReplica = Callable[..., Awaitable[InProcessRegcache]]


def blob_path(digest: str, repository: str = "library/app") -> str:
    return f"/v2/{repository}/blobs/{digest}"


def stall_once(digest: str, after: int = 64 * KIB, seconds: float = 0.3) -> Fault:
    """The first download of ``digest`` goes silent for a while after ``after`` bytes, so
    that requests made meanwhile find it under way."""
    return Fault(path=blob_path(digest), method="GET", stall=(after, seconds), times=1)


@pytest.fixture(autouse=True)
def quick_resume_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production waits 0.1 s, 0.5 s and 2 s between resumes; the count of attempts is what
    # the tests check, not the waits.
    monkeypatch.setattr(proxy.upstream.blobstream, "RESUME_BACKOFF", (0.01, 0.01, 0.01))


@pytest.fixture(autouse=True)
def quick_eviction_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production looks for commands' changes every 10 s; tests would wait that long for each.
    monkeypatch.setattr(proxy.cache.eviction, "FOLLOW_EVERY", 0.05)


BUCKET = "regcache-server"


@pytest.fixture
def s3_settings(rgw: CephCluster, tmp_path: Path) -> dict[str, Any]:
    """Config settings for a bucket of the session's gateway, under a prefix of this test's."""
    rgw.create_bucket(BUCKET)
    endpoint = rgw.endpoint
    return {
        "storage_backend": "s3",
        "storage_s3_endpoint": endpoint.url,
        "storage_s3_bucket": BUCKET,
        "storage_s3_region": endpoint.region,
        "storage_s3_prefix": hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16] + "/",
        "storage_s3_access_key_id": endpoint.access_key,
        "storage_s3_secret_access_key": endpoint.secret_key,
    }


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    async with FakeRegistry() as fake:
        yield fake


@pytest.fixture
def image(registry: FakeRegistry) -> FakeImage:
    """``library/app:1.0``: a 64 KiB and a 300 KiB layer (more than one upstream read)."""
    return registry.push_image("library/app", "1.0", layer_sizes=(64 * KIB, 300 * KIB))


@pytest.fixture
async def make_proxy(tmp_path: Path, registry: FakeRegistry) -> AsyncIterator[ProxyFactory]:
    """``await make_proxy(**settings)``: a started regcache whose one upstream, docker.io, is
    the fake registry; ``settings`` are Config and UpstreamConfig fields (see make_config)."""
    started: list[InProcessRegcache] = []

    async def make(**settings: Any) -> InProcessRegcache:
        cache_dir = settings.pop("cache_dir", tmp_path / f"cache{len(started)}")
        regcache = InProcessRegcache(make_config(cache_dir, registry.url, **settings))
        started.append(regcache)
        await regcache.start()
        return regcache

    yield make
    for regcache in started:
        await stopped(regcache)


# A stop that hangs would hang the whole run (and CI) with no word of where: fail instead,
# with the stacks of the tasks still running.
STOP_PATIENCE = 30.0


async def stopped(regcache: InProcessRegcache) -> None:
    try:
        async with asyncio.timeout(STOP_PATIENCE):
            await regcache.stop()
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        raise AssertionError(f"regcache did not stop; its tasks:\n{stacks.getvalue()}") from None


@pytest.fixture
async def regcache(make_proxy: ProxyFactory) -> InProcessRegcache:
    return await make_proxy()


class _FullDisk:
    """A blob file that refuses to grow past ``limit`` bytes, as a full disk does."""

    def __init__(self, file: Any, limit: int) -> None:
        self._file = file
        self._room = limit

    def write(self, chunk: bytes) -> int:
        if len(chunk) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(chunk)
        written: int = self._file.write(chunk)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@pytest.fixture
def disk_full_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``disk_full_after(n)``: blob files cannot grow past ``n`` bytes (ENOSPC).

    Injected into the file a blob writer spools to, so that the writer's own bookkeeping
    (hash, byte count) runs as on a real full disk. Internal seam: repoint when the store
    interfaces are refactored.
    """

    def arm(limit: int) -> None:
        original = Spool.open_now

        def open_on_full_disk(self: Spool) -> None:
            original(self)
            self._file = cast(io.FileIO, _FullDisk(self._file, limit))

        monkeypatch.setattr(Spool, "open_now", open_on_full_disk)

    return arm


@pytest.fixture
def index_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write to the index fails as SQLite fails on a full disk.

    Internal seam: the disk index's write methods; repoint when the store interfaces change.
    """

    async def fail(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    for method in ("put_manifest", "put_tag", "record_use", "record_uses"):
        monkeypatch.setattr(DiskIndex, method, fail)


@pytest.fixture
def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """(file name, offset, count) of every span the server sent with the kernel's sendfile.

    Internal seam: the event loop's sendfile, which proxy.server.sendfile calls.
    """
    sent: list[tuple[str, int, int]] = []
    original = asyncio.BaseEventLoop.sendfile

    async def recording(
        loop: asyncio.BaseEventLoop,
        transport: asyncio.WriteTransport,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        sent.append((file.name, offset, count or 0))
        return await original(loop, transport, file, offset, count, fallback=fallback)

    monkeypatch.setattr(asyncio.BaseEventLoop, "sendfile", recording)
    return sent


@pytest.fixture
def redis_settings(redis_server: RedisServer) -> dict[str, Any]:
    """Config settings for the session's Redis, under a key prefix of this test's own."""
    return {
        "index_backend": "redis",
        "index_redis_url": redis_server.url,
        "index_redis_prefix": f"test-{uuid.uuid4().hex}:",
    }


# -- bundles (test_bundles_*.py) ---------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "export": export,
    "import": import_bundle,
    "inventory": inventory,
}


@pytest.fixture
def config_file(tmp_path: Path, registry: FakeRegistry) -> Path:
    path = tmp_path / "regcache.yaml"
    path.write_text(f"upstreams:\n  - name: docker.io\n    url: {registry.url}\n")
    return path


@pytest.fixture
def cli(config_file: Path) -> Run:
    """``await cli("export", IMAGE, "-o", ..., cache=DIR)``: a command in this event loop."""

    async def run(command: str, *argv: str, cache: Path) -> int:
        args = build_parser().parse_args(
            [command, *argv, "--config", str(config_file), "--cache-dir", str(cache)]
        )
        return await COMMANDS[command](args)

    return run


@pytest.fixture
async def bundle(cli: Run, tmp_path: Path, image: FakeImage) -> Path:
    path = tmp_path / "bundle.tar"
    assert await cli("export", IMAGE, "--fetch", "-o", str(path), cache=tmp_path / "a") == 0
    return path


# -- replicas of one fleet (test_fleet_blobs_*.py) ---------------------------------------------

REPLICA_SECRET = b"replicas-of-one-fleet-share-this-key-0123456789"


@pytest.fixture
def replica_key(tmp_path: Path) -> TokenKey:
    path = tmp_path / "replica.key"
    path.write_bytes(REPLICA_SECRET)
    return TokenKey(path, REPLICA_SECRET)


@pytest.fixture
def fleet_settings(
    redis_server: RedisServer, s3_settings: dict[str, Any], replica_key: TokenKey
) -> dict[str, Any]:
    return {
        **s3_settings,
        "index_backend": "redis",
        "index_redis_url": redis_server.url,
        "index_redis_prefix": f"fleet-{uuid.uuid4().hex}:",
        "replica_secret_file": replica_key,
    }


@pytest.fixture
async def start_replica(
    registry: FakeRegistry, tmp_path: Path, fleet_settings: dict[str, Any]
) -> AsyncIterator[StartReplica]:
    """``await start_replica(name, **settings)``: a replica that advertises its own address
    (unless ``advertise=False``), with ``settings`` over the fleet's."""
    started: list[InProcessRegcache] = []

    async def start(name: str, advertise: bool = True, **settings: Any) -> InProcessRegcache:
        port = free_port()
        url = f"http://127.0.0.1:{port}" if advertise else None
        merged = {**fleet_settings, "replica_name": name, "replica_advertise_url": url}
        merged.update(settings)
        replica = InProcessRegcache(make_config(tmp_path / name, registry.url, **merged), port=port)
        started.append(replica)
        await replica.start()
        return replica

    yield start
    for replica in started:
        await replica.stop()


@pytest.fixture
def big(registry: FakeRegistry) -> FakeImage:
    """One 4 MiB layer: many reads, and room to die in the middle of it."""
    return registry.push_image("library/app", "big", layer_sizes=(4 * MIB,))
