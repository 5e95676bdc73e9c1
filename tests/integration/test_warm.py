"""``regcache warm`` end to end: the real command against a real Distribution upstream, then
the warmed cache directory served offline to skopeo; and warming through a running regcache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RegcacheFactory, RegistryFactory
from tests.support import skopeo
from tests.support.regcache import REPO_ROOT
from tests.support.registry import Registry
from tests.support.upstreams import UpstreamImages, push_repos

WARMED = (("library/small:1.0", "small"), ("library/multi:1.0", "multi"))


@pytest.fixture
def own_upstream(registry_factory: RegistryFactory, test_images: UpstreamImages) -> Registry:
    """A registry of this test's own, whose access log only this test writes to."""
    registry = registry_factory()
    push_repos(registry, test_images, WARMED)
    return registry


def regcache_command(tmp_path: Path, upstream: Registry, *args: str) -> tuple[int, Any, str]:
    """``python -m proxy ARGS --json`` with a config naming ``upstream`` docker.io: its exit
    status, its JSON summary, and its standard error."""
    config = tmp_path / "regcache.yaml"
    config.write_text(yaml.safe_dump({"upstreams": [{"name": "docker.io", "url": upstream.url}]}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGCACHE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout or "null"), done.stderr


def test_a_warmed_cache_serves_offline_with_no_upstream_request(
    own_upstream: Registry,
    test_images: UpstreamImages,
    regcache_factory: RegcacheFactory,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    images = ["docker.io/library/small:1.0", "docker.io/multi:1.0"]
    status, rows, err = regcache_command(
        tmp_path, own_upstream, "warm", "--cache-dir", str(cache), *images
    )
    assert status == 0, err
    assert [row["platforms"] for row in rows] == [[], ["linux/amd64", "linux/arm64"]]
    assert all(row["present"] == 0 for row in rows)
    mark = own_upstream.mark()

    proxy = regcache_factory(
        {"upstreams": [{"name": "docker.io", "url": own_upstream.url}]},
        cache_dir=cache,
        extra_args=["--offline"],
    )
    small = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "small")
    assert small.manifest == test_images.small.manifest
    for digest in test_images.small.blob_digests:
        assert small.blob(digest) == test_images.small.blob(digest)
    multi = skopeo.pull(proxy.ref("multi", "1.0"), tmp_path / "multi", all_images=True)
    assert multi.manifest == test_images.multi.index
    for image in test_images.multi.images:
        assert multi.instance_manifest(image.manifest_digest) == image.manifest
        for digest in image.blob_digests:
            assert multi.blob(digest) == image.blob(digest)
    assert own_upstream.requests(since=mark) == []


def test_warm_again_fetches_nothing(
    own_upstream: Registry, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    warm = ["warm", "--cache-dir", str(tmp_path / "cache"), "docker.io/library/multi:1.0"]
    status, [first], _ = regcache_command(
        tmp_path, own_upstream, *warm, "--platform", "linux/arm64"
    )
    assert status == 0
    mark = own_upstream.mark()
    status, [second], _ = regcache_command(
        tmp_path, own_upstream, *warm, "--platform", "linux/arm64"
    )
    assert status == 0
    assert second["fetched"] == 0
    assert second["present"] == first["fetched"]
    assert own_upstream.blob_gets(since=mark) == 0


def test_warm_through_a_running_regcache(
    own_upstream: Registry,
    test_images: UpstreamImages,
    regcache_factory: RegcacheFactory,
    tmp_path: Path,
) -> None:
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": own_upstream.url}]})
    warm = ["warm", "--server", proxy.url, "docker.io/library/small:1.0"]
    status, [first], err = regcache_command(tmp_path, own_upstream, *warm)
    assert status == 0, err
    assert first["fetched"] > test_images.small.total_layer_size
    mark = own_upstream.mark()
    status, [second], _ = regcache_command(tmp_path, own_upstream, *warm)
    assert status == 0
    assert (second["fetched"], second["present"]) == (0, first["fetched"])
    pulled = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "pulled")
    assert pulled.manifest == test_images.small.manifest
    assert own_upstream.blob_gets(since=mark) == 0

    status, [gone], err = regcache_command(
        tmp_path, own_upstream, "warm", "--server", proxy.url, "docker.io/library/gone:1"
    )
    assert status == 1
    assert gone["error"].startswith("MANIFEST_UNKNOWN")
    assert "warm docker.io/library/gone:1 failed: MANIFEST_UNKNOWN" in err
