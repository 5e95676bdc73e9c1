"""``index.redis.url: redis+sentinel://...``: the index in the master a Sentinel knows, with a
real ``redis-server`` and a real Sentinel (``redis-server --sentinel``) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config.declare import redact_url_password
from proxy.config.parsers import Invalid, parse_redis_url, parse_sentinel_url
from proxy.store.redisindex import RedisIndex
from tests.fast.conftest import ProxyFactory
from tests.fast.test_manage import pull
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.redisserver import RedisSentinel, RedisServer


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    with (
        RedisServer(work_dir=tmp_path / "master") as master,
        RedisSentinel(master, work_dir=tmp_path / "sentinel") as watching,
    ):
        yield watching


async def test_the_index_lives_in_the_master_the_sentinel_names(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, sentinel: RedisSentinel
) -> None:
    regcache = await make_proxy(index_backend="redis", index_redis_url=sentinel.url)
    await pull(regcache, image)
    seen = len(registry.seen)
    # Another replica on an empty disk finds the tag and manifest through the same Sentinel.
    other = await make_proxy(index_backend="redis", index_redis_url=sentinel.url)
    await pull(other, image)
    assert not [r for r in registry.seen[seen:] if "/manifests/" in r.path and r.method == "GET"]
    # And they are in the master itself, where a plain URL reaches them.
    master = RedisIndex(sentinel.master.url)
    try:
        assert {key.tag async for key, _ in master.tags()} == {image.tag}
    finally:
        await master.close()


def test_a_sentinel_url_names_its_sentinels_service_db_and_password() -> None:
    found = parse_sentinel_url("redis+sentinel://:p%40ss@10.0.0.1:26379,[fd00::2]:26380/cache/3")
    assert found.hosts == (("10.0.0.1", 26379), ("fd00::2", 26380))
    assert (found.service, found.db, found.password) == ("cache", 3, "p@ss")
    url = "redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/cache"
    assert "secret" not in redact_url_password(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://10.0.0.1/cache", "HOST:PORT"),
        ("redis+sentinel://10.0.0.1:99999/cache", "HOST:PORT"),
        ("redis+sentinel://10.0.0.1:26379", "/SERVICE"),
        ("redis+sentinel://10.0.0.1:26379/cache/zero", "/SERVICE"),
        ("redis+sentinel://10.0.0.1:26379/a/1/b", "/SERVICE"),
        ("sentinel://10.0.0.1:26379/cache", "redis+sentinel://"),
    ],
)
def test_a_wrong_sentinel_url_is_refused_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(Invalid, match=says.replace("+", r"\+")):
        parse_redis_url(url)
