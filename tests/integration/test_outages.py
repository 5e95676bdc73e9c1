"""Upstream outages: stale tags keep serving, offline mode never calls out, rate limits show."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RegcacheFactory, RegistryFactory
from tests.support import skopeo
from tests.support.faults import FaultyUpstream
from tests.support.images import ImageInfo, build_image
from tests.support.registry import Registry
from tests.support.upstreams import Upstream

MANIFEST_PATH = "/v2/library/app/manifests/1.0"


@pytest.fixture
def own_registry(registry_factory: RegistryFactory, tmp_path: Path) -> tuple[Registry, ImageInfo]:
    """A registry of the test's own, to stop and start, holding ``library/app:1.0``."""
    registry = registry_factory()
    image = build_image(tmp_path / "layout", "app", seed=31, layer_sizes=[64 * 1024, 128 * 1024])
    skopeo.push(tmp_path / "layout", "app", f"{registry.host}/library/app:1.0")
    return registry, image


def accept(image: ImageInfo) -> dict[str, str]:
    return {"Accept": image.manifest_media_type}


def test_stale_tag_is_served_while_the_upstream_is_down(
    own_registry: tuple[Registry, ImageInfo],
    regcache_factory: RegcacheFactory,
    tmp_path: Path,
) -> None:
    registry, image = own_registry
    proxy = regcache_factory(
        {"upstreams": [{"name": "docker.io", "url": registry.url, "tag_ttl": 0}]}
    )
    skopeo.pull(proxy.ref("app", "1.0"), tmp_path / "warm")
    with registry.stopped():
        pulled = skopeo.pull(proxy.ref("app", "1.0"), tmp_path / "outage")
        response = proxy.get(MANIFEST_PATH, accept(image))
    assert pulled.manifest == image.manifest
    assert response.status == 200
    assert "Response is Stale" in response.headers["Warning"]
    assert proxy.metric("regcache_stale_served_total") >= 2
    # Back up: revalidation resumes and the warning goes away.
    fresh = proxy.get(MANIFEST_PATH, accept(image))
    assert "Warning" not in fresh.headers


def test_uncached_content_during_an_outage_is_a_clean_503(
    own_registry: tuple[Registry, ImageInfo], regcache_factory: RegcacheFactory
) -> None:
    registry, image = own_registry
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": registry.url}]})
    with registry.stopped():
        response = proxy.get(MANIFEST_PATH, accept(image))
    assert response.status == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_rate_limited_upstream_serves_stale_when_cached(
    faulty: FaultyUpstream, regcache_factory: RegcacheFactory, upstream: Upstream
) -> None:
    proxy = regcache_factory(
        {"upstreams": [{"name": "docker.io", "url": faulty.url, "tag_ttl": 0}]}
    )
    image = upstream.images.small
    assert proxy.get("/v2/library/small/manifests/1.0", accept(image)).status == 200
    faulty.faults.status[r"/v2/library/small/manifests/.*"] = (429, {"Retry-After": "60"})
    response = proxy.get("/v2/library/small/manifests/1.0", accept(image))
    assert response.status == 200
    assert response.body == image.manifest
    assert "Warning" in response.headers


@pytest.mark.parametrize("keep_serving", [False, True])
def test_tag_deleted_upstream_is_passed_on_unless_configured(
    faulty: FaultyUpstream,
    regcache_factory: RegcacheFactory,
    upstream: Upstream,
    keep_serving: bool,
) -> None:
    entry = {"name": "docker.io", "url": faulty.url, "tag_ttl": 0}
    entry["serve_stale_on_not_found"] = keep_serving
    proxy = regcache_factory({"upstreams": [entry]})
    image = upstream.images.small
    assert proxy.get("/v2/library/small/manifests/1.0", accept(image)).status == 200
    faulty.faults.status[r"/v2/library/small/manifests/.*"] = (404, {})
    response = proxy.get("/v2/library/small/manifests/1.0", accept(image))
    assert response.status == (200 if keep_serving else 404)


def test_offline_mode_serves_the_cache_and_never_calls_out(
    own_registry: tuple[Registry, ImageInfo],
    regcache_factory: RegcacheFactory,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    registry, image = own_registry
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": registry.url}]})
    skopeo.pull(proxy.ref("app", "1.0"), tmp_path / "warm")
    proxy.extra_args.append("--offline")
    proxy.restart()

    mark = registry.mark()
    pulled = skopeo.pull(proxy.ref("app", "1.0"), tmp_path / "offline")
    assert pulled.manifest == image.manifest
    missing_manifest = proxy.get("/v2/library/other/manifests/1.0")
    missing_blob = proxy.get("/v2/library/app/blobs/sha256:" + "c" * 64)
    missing_head = proxy.request("HEAD", "/v2/library/app/blobs/sha256:" + "c" * 64)
    assert registry.requests(since=mark) == []

    assert missing_manifest.status == 404
    assert missing_manifest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert "offline" in missing_manifest.json()["errors"][0]["message"]
    assert missing_blob.status == 404
    assert missing_blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert missing_head.status == 404


def test_docker_hub_rate_limit_header_is_a_gauge(
    faulty: FaultyUpstream, regcache_factory: RegcacheFactory
) -> None:
    faulty.faults.response_headers["ratelimit-remaining"] = "76;w=21600"
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": faulty.url}]})
    proxy.get("/v2/library/small/manifests/1.0")
    assert proxy.metric("regcache_upstream_ratelimit_remaining", upstream="docker.io") == 76
