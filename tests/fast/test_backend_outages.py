"""The shared backends out of reach while regcache serves: Ceph's gateway killed under a
running server, a start with no S3 to reach, a Redis stopped. Pulls go on from the upstream
(uncached), ``/readyz`` names what is out until it is back, and an outage is logged once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fast.conftest import ProxyFactory, blob_path
from tests.fast.test_manage import pull
from tests.support.ceph import CephCluster
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.ports import free_port
from tests.support.redisserver import RedisServer

WATCH_LOGGER = "proxy.store.s3calls"


def outage_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WATCH_LOGGER and r.levelno == level]


async def test_with_the_gateway_killed_blobs_come_from_the_upstream_and_readyz_says_so(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    registry: FakeRegistry,
    image: FakeImage,
    rgw: CephCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    regcache = await make_proxy(**s3_settings)
    cached, missed = image.layer_digests
    assert (await regcache.get(blob_path(cached))).status == 200
    assert (await regcache.get("/readyz")).status == 200
    assert await regcache.metric("regcache_s3_requests_total", op="PutObject", status="200") == 1
    fetched = registry.count("GET", blob_path(cached))

    rgw.rgw.kill()
    try:
        # The cached blob cannot be read from the bucket, the missing one cannot go into it.
        answers = await asyncio.gather(
            *(regcache.get(blob_path(digest)) for digest in (cached, missed) * 6)
        )
        assert [a.status for a in answers] == [200] * 12
        assert [a.body for a in answers] == list(image.layers) * 6
        assert registry.count("GET", blob_path(cached)) > fetched
        ready = await regcache.get("/readyz")
        assert (ready.status, ready.body) == (200, b"degraded: s3 unreachable\n")
        assert ready.headers["X-Regcache-Degraded"] == "s3"
        assert await regcache.metric("regcache_s3_requests_total", status="error") > 0
        assert await regcache.metric("regcache_cache_write_failures_total", reason="store") > 0
    finally:
        rgw.rgw.start()

    assert (await regcache.get("/readyz")).status == 200
    # Many failing requests, one outage: one warning as it began, one line as it ended.
    assert len(outage_lines(caplog, logging.WARNING)) == 1
    assert outage_lines(caplog, logging.INFO) == [
        "S3 store reachable again: caching blobs in it once more"
    ]
    again = await regcache.get(blob_path(cached))
    assert (again.status, again.headers["X-Cache"]) == (200, "HIT")


async def test_regcache_starts_without_its_s3_store_and_serves_uncached(
    make_proxy: ProxyFactory,
    s3_settings: dict[str, Any],
    registry: FakeRegistry,
    image: FakeImage,
) -> None:
    nowhere = {**s3_settings, "storage_s3_endpoint": f"http://127.0.0.1:{free_port()}"}
    regcache = await make_proxy(**nowhere)
    await pull(regcache, image)
    await pull(regcache, image)  # nothing was cached: the upstream serves the blobs again
    assert registry.count("GET", blob_path(image.layer_digests[0])) == 2
    ready = await regcache.get("/readyz")
    assert (ready.status, ready.body) == (200, b"degraded: s3 unreachable\n")


async def test_readyz_says_redis_is_unreachable_while_it_is_stopped(
    make_proxy: ProxyFactory,
    image: FakeImage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A Redis of its own, to stop and start again without disturbing other tests.
    with RedisServer(work_dir=tmp_path / "redis") as server:
        regcache = await make_proxy(index_backend="redis", index_redis_url=server.url)
        assert (await regcache.get("/readyz")).status == 200
        server.stop()
        ready = await regcache.get("/readyz")
        assert (ready.status, ready.body) == (200, b"degraded: redis unreachable\n")
        assert ready.headers["X-Regcache-Degraded"] == "redis"
        for _ in range(3):
            await pull(regcache, image)  # degraded, still serving
        server.start()
        assert (await regcache.get("/readyz")).body == b"ready\n"
        await regcache.stop()
    # Every pull's index calls failed; the outage was logged as it began and as it ended.
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    outage = [(level, text) for level, text in logged if "Redis index" in text]
    assert [level for level, _ in outage] == [logging.WARNING, logging.INFO]
    assert not [text for _, text in logged if "could not" in text]
    assert [r for r in caplog.records if "could not" in r.getMessage()]  # quietly, though
