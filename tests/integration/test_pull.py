"""End to end: skopeo pulls through a real regcache process from a real Distribution upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import RegcacheFactory, RegistryFactory
from tests.support import skopeo
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream

BLOB = r"/v2/.+/blobs/sha256:[0-9a-f]{64}"
MANIFEST = r"/v2/.+/manifests/.+"


def hub_proxy(factory: RegcacheFactory, upstream: Upstream, **entry: Any) -> RegcacheProcess:
    """A proxy whose docker.io (the default upstream) is the test registry."""
    return factory({"default_upstream": "docker.io", "upstreams": [upstream.entry(**entry)]})


def assert_same_image(through: skopeo.PulledImage, direct: skopeo.PulledImage) -> None:
    assert through.manifest == direct.manifest
    names = sorted(p.name for p in direct.out_dir.iterdir() if p.name != "version")
    assert sorted(p.name for p in through.out_dir.iterdir() if p.name != "version") == names
    for name in names:
        assert (through.out_dir / name).read_bytes() == (direct.out_dir / name).read_bytes()


def test_cold_pull_fetches_each_blob_once_and_warm_pull_touches_no_upstream(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = hub_proxy(regcache_factory, upstream)
    image = upstream.images.small
    blobs = {image.config_digest, *image.layer_digests}

    mark = upstream.registry.mark()
    cold = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "cold")
    assert upstream.registry.blob_gets(since=mark) == len(blobs)
    for digest in blobs:
        assert upstream.registry.blob_gets(digest, since=mark) == 1

    mark = upstream.registry.mark()
    warm = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "warm")
    assert upstream.registry.requests(since=mark) == []

    direct = skopeo.pull(upstream.ref("library/small", "1.0"), tmp_path / "direct")
    assert_same_image(cold, direct)
    assert_same_image(warm, direct)
    assert cold.manifest == image.manifest
    assert proxy.metric("regcache_cache_requests_total", kind="blob", result="hit") == len(blobs)
    assert proxy.metric("regcache_cache_requests_total", kind="blob", result="miss") == len(blobs)
    assert proxy.metric("regcache_served_bytes_total", source="cache") >= sum(image.layer_sizes)
    assert proxy.metric("regcache_cache_size_bytes") >= sum(image.layer_sizes)


def test_pull_by_digest(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = hub_proxy(regcache_factory, upstream)
    image = upstream.images.app
    pulled = skopeo.pull(
        proxy.ref("org/app", "1.0"), tmp_path / "o", by_digest=image.manifest_digest
    )
    assert pulled.manifest == image.manifest
    for digest in image.layer_digests:
        assert pulled.has_blob(digest)
    mark = upstream.registry.mark()
    skopeo.pull(proxy.ref("org/app", "1.0"), tmp_path / "again", by_digest=image.manifest_digest)
    assert upstream.registry.requests(since=mark) == []


def test_multi_platform_index_with_all(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = hub_proxy(regcache_factory, upstream)
    index = upstream.images.multi
    through = skopeo.pull(proxy.ref("multi", "1.0"), tmp_path / "through", all_images=True)
    direct = skopeo.pull(upstream.ref("library/multi", "1.0"), tmp_path / "direct", all_images=True)
    assert_same_image(through, direct)
    assert through.manifest == index.index
    mark = upstream.registry.mark()
    skopeo.pull(proxy.ref("multi", "1.0"), tmp_path / "warm", all_images=True)
    assert upstream.registry.requests(since=mark) == []


def test_platform_pick_from_index(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = hub_proxy(regcache_factory, upstream)
    arm = next(i for i in upstream.images.multi.images if i.architecture == "arm64")
    pulled = skopeo.pull(proxy.ref("multi", "1.0"), tmp_path / "arm", platform=("linux", "arm64"))
    assert pulled.manifest == arm.manifest


def test_path_prefix_routes_to_a_second_registry_and_alias(
    upstream: Upstream,
    second_upstream: Upstream,
    regcache_factory: RegcacheFactory,
    tmp_path: Path,
) -> None:
    proxy = regcache_factory(
        {
            "default_upstream": "docker.io",
            "upstreams": [
                upstream.entry("docker.io", aliases=["hub"]),
                second_upstream.entry("ghcr.io"),
            ],
        }
    )
    tool = second_upstream.images.tool
    via_prefix = skopeo.pull(proxy.ref("ghcr.io/org/tool", "2.0"), tmp_path / "ghcr")
    assert via_prefix.manifest == tool.manifest
    assert second_upstream.registry.blob_gets(tool.layer_digests[0]) >= 1

    small = upstream.images.small
    for prefix in ("docker.io/library/small", "docker.io/small", "hub/small", "library/small"):
        pulled = skopeo.pull(proxy.ref(prefix, "1.0"), tmp_path / prefix.replace("/", "_"))
        assert pulled.manifest == small.manifest
    assert proxy.metric("regcache_cache_requests_total", upstream="ghcr.io", kind="blob") > 0


def test_namespace_query_routes_like_containerd(
    upstream: Upstream, second_upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    proxy = regcache_factory(
        {
            "default_upstream": "docker.io",
            "upstreams": [upstream.entry("docker.io"), second_upstream.entry("ghcr.io")],
        }
    )
    tool = second_upstream.images.tool
    accept = {"Accept": tool.manifest_media_type}
    response = proxy.get("/v2/org/tool/manifests/2.0?ns=ghcr.io", accept)
    assert response.status == 200
    assert response.body == tool.manifest
    assert response.headers["OCI-Namespace"] == "ghcr.io"
    assert response.headers["Docker-Content-Digest"] == tool.manifest_digest

    blob = proxy.get(f"/v2/org/tool/blobs/{tool.layer_digests[0]}?ns=ghcr.io")
    assert blob.status == 200
    assert len(blob.body) == tool.layer_sizes[0]

    unknown = proxy.get("/v2/org/tool/manifests/2.0?ns=quay.example")
    assert unknown.status == 404
    assert unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_manifest_head_matches_get_and_revalidates_after_ttl(
    upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    proxy = hub_proxy(regcache_factory, upstream, tag_ttl=0)
    image = upstream.images.small
    accept = {"Accept": image.manifest_media_type}
    get = proxy.get("/v2/library/small/manifests/1.0", accept)
    head = proxy.request("HEAD", "/v2/library/small/manifests/1.0", accept)
    assert get.status == head.status == 200
    for header in ("Docker-Content-Digest", "Content-Type", "Content-Length"):
        assert head.headers[header] == get.headers[header]
    assert get.headers["Content-Type"] == image.manifest_media_type
    assert int(get.headers["Content-Length"]) == len(image.manifest)

    mark = upstream.registry.mark()
    again = proxy.get("/v2/library/small/manifests/1.0", accept)
    assert again.body == image.manifest
    # With the TTL spent, one HEAD (free on Docker Hub) confirms the tag; no GET.
    assert upstream.registry.count("HEAD", MANIFEST, mark) == 1
    assert upstream.registry.count("GET", MANIFEST, mark) == 0
    assert proxy.metric("regcache_cache_requests_total", kind="manifest", result="revalidated") >= 1


def test_tag_moved_upstream_is_followed_after_ttl(
    registry_factory: RegistryFactory, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    from tests.support.images import build_image

    registry = registry_factory()
    layout = tmp_path / "layout"
    first = build_image(layout, "v1", seed=11, layer_sizes=[4096])
    second = build_image(layout, "v2", seed=12, layer_sizes=[4096])
    skopeo.push(layout, "v1", f"{registry.host}/library/moving:latest")
    proxy = regcache_factory(
        {"upstreams": [{"name": "docker.io", "url": registry.url, "tag_ttl": 0}]}
    )
    assert skopeo.pull(proxy.ref("moving", "latest"), tmp_path / "a").manifest == first.manifest
    skopeo.push(layout, "v2", f"{registry.host}/library/moving:latest")
    assert skopeo.pull(proxy.ref("moving", "latest"), tmp_path / "b").manifest == second.manifest


def test_tag_answer_is_trusted_within_ttl(
    upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    proxy = hub_proxy(regcache_factory, upstream, tag_ttl=3600)
    accept = {"Accept": upstream.images.small.manifest_media_type}
    assert proxy.get("/v2/library/small/manifests/1.0", accept).status == 200
    mark = upstream.registry.mark()
    for _ in range(3):
        assert proxy.request("HEAD", "/v2/library/small/manifests/1.0", accept).status == 200
        assert proxy.get("/v2/library/small/manifests/1.0", accept).status == 200
    assert upstream.registry.requests(since=mark) == []
