"""``index.backend: redis``: the server and the cache-directory commands keep the index in a
real redis-server (the session's, tests keeping apart by key prefix), and nothing of it in
the cache directory. A Redis out of reach costs caching, not answers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.commands.listing import list_images
from proxy.commands.warm import WarmOptions, plan_image, warm_images
from proxy.model import Kind, RepoRef
from proxy.oci.digest import Digest
from proxy.routing import Router
from proxy.store import IndexUnavailable
from proxy.store.redisindex import RedisIndex
from tests.fast.conftest import ProxyFactory
from tests.fast.test_eviction_beside import BOUND, IMAGE, evicted_to_the_bound
from tests.fast.test_manage import as_json, pull
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer


@pytest.fixture
async def index(redis_settings: dict[str, Any]) -> AsyncIterator[RedisIndex]:
    """The index the regcache under test uses, as another process would open it."""
    opened = RedisIndex(redis_settings["index_redis_url"], redis_settings["index_redis_prefix"])
    yield opened
    await opened.close()


async def test_a_restarted_regcache_serves_from_the_redis_index(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    redis_settings: dict[str, Any],
    index: RedisIndex,
) -> None:
    regcache = await make_proxy(**redis_settings)
    await pull(regcache, image)
    # Offline, the tag can only be answered from what the index remembers.
    await regcache.restart(offline=True)
    seen = len(registry.seen)
    await pull(regcache, image)
    assert len(registry.seen) == seen
    await regcache.stop()
    assert not (regcache.config.cache_dir / "index").exists()
    tags = {(key.repository, key.tag) async for key, _ in index.tags()}
    assert tags == {("library/app", "1.0")}  # a key per Accept list asked for
    assert await index.get_manifest(Digest.parse(image.digest)) is not None
    layer = Digest.parse(image.layer_digests[0])
    assert list(await index.references(Kind.BLOB, layer)) == [RepoRef("docker.io", "library/app")]


async def test_ls_lists_what_the_redis_index_holds(
    make_proxy: ProxyFactory,
    image: FakeImage,
    redis_settings: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    regcache = await make_proxy(**redis_settings)
    await pull(regcache, image)
    await regcache.stop()
    status, rows = await as_json(capsys, list_images(regcache.config, as_json=True))
    assert status == 0
    assert [(row["repository"], row["tag"], row["digest"]) for row in rows] == [
        ("library/app", "1.0", image.digest)
    ]
    assert rows[0]["last_served"].endswith("Z")


async def test_what_warm_stores_beside_a_server_sharing_the_redis_index_is_evicted(
    make_proxy: ProxyFactory, image: FakeImage, redis_settings: dict[str, Any]
) -> None:
    """The change counter the command bumps is in Redis: the server sees it at its next pass."""
    regcache = await make_proxy(cache_max_size=BOUND, **redis_settings)
    options = WarmOptions(platforms=(), concurrency=4, pin=False, server=None, as_json=True)
    planned = [plan_image(IMAGE, Router(regcache.config), False)]
    assert await warm_images(regcache.config, planned, options) == 0
    await evicted_to_the_bound(regcache)


async def test_an_outage_of_redis_costs_caching_not_answers(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A Redis of its own, to stop and start again without disturbing other tests.
    with RedisServer(work_dir=tmp_path / "redis") as server:
        settings = {"index_backend": "redis", "index_redis_url": server.url}
        regcache = await make_proxy(**settings)
        await pull(regcache, image)
        server.stop()
        seen = len(registry.seen)
        await pull(regcache, image)  # the tag and manifest from the upstream again
        assert len(registry.seen) > seen
        with pytest.raises(IndexUnavailable):
            await list_images(regcache.config, as_json=True)
        # Back, and empty (it kept nothing): the next pull fills it again.
        server.start()
        await pull(regcache, image)
        await regcache.stop()
        status, rows = await as_json(capsys, list_images(regcache.config, as_json=True))
        assert (status, [row["digest"] for row in rows]) == (0, [image.digest])


def test_a_command_says_in_one_line_that_redis_is_out_of_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGCACHE_INDEX_BACKEND", "redis")
    monkeypatch.setenv("REGCACHE_INDEX_REDIS_URL", f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert main(["ls", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regcache: the index is out of reach: Redis: ")
    assert err.count("\n") == 1
    assert ":pw@" not in err


async def test_a_redis_that_stops_answering_costs_seconds_not_the_pull(
    make_proxy: ProxyFactory, image: FakeImage, tmp_path: Path
) -> None:
    with RedisServer(work_dir=tmp_path / "redis") as server:
        url = f"{server.url}?socket_timeout=0.2&socket_connect_timeout=0.2"
        regcache = await make_proxy(index_backend="redis", index_redis_url=url)
        await pull(regcache, image)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            started = time.monotonic()
            await pull(regcache, image)
            # A bound on waiting, not a timing assertion: without timeouts this never ends.
            assert time.monotonic() - started < 30
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await regcache.stop()
