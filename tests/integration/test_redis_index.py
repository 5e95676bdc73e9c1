"""A real ``regcache serve`` process keeping its index in a real redis-server: skopeo pulls
through it, and after a restart it serves the image offline from what Redis remembers."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.redisserver import RedisServer
from tests.support.upstreams import Upstream


def test_a_restarted_process_serves_offline_from_the_redis_index(
    upstream: Upstream,
    regcache_factory: RegcacheFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    index = {"backend": "redis", "redis": {"url": redis_server.url, "prefix": f"{uuid.uuid4()}:"}}
    config = {"upstreams": [upstream.entry("docker.io")], "index": index}
    proxy = regcache_factory(config)
    image = upstream.images.small
    pulled = skopeo.pull(proxy.ref("library/small", "1.0"), tmp_path / "one")
    assert pulled.manifest == image.manifest

    proxy.write_config({**config, "offline": True})
    proxy.restart()
    mark = upstream.registry.mark()
    pulled = skopeo.pull(proxy.ref("library/small", "1.0"), tmp_path / "two")
    assert pulled.manifest == image.manifest
    assert upstream.registry.requests(since=mark) == []
    assert not (proxy.cache_dir / "index").exists()
