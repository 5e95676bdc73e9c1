"""containerd pulls through regcache named as a mirror in ``hosts.toml``, one per registry.

containerd adds ``?ns=<registry>`` to every request it sends a mirror; that is how one regcache
serves docker.io and ghcr.io images to it under their own names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.containerd import Containerd
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import access_mark, regcache_requests, registry_digest, v2_requests
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes

AGENT = "containerd/"


def blob_paths(repository: str, digests: tuple[str, ...]) -> set[str]:
    return {f"/v2/{repository}/blobs/{d}" for d in digests}


def test_docker_io_image_pulls_and_unpacks_through_regcache(
    containerd: Containerd,
    ctr_ns: str,
    hosts_dir: Path,
    runtime_cache: RegcacheProcess,
    upstream: Upstream,
) -> None:
    image = upstream.images.small
    mark = access_mark(runtime_cache)

    pulled = containerd.pull(ctr_ns, "docker.io/library/small:1.0", hosts_dir)

    assert pulled.digest == registry_digest(upstream.url, "library/small", "1.0")
    assert pulled.digest == image.manifest_digest
    assert containerd.unpacked(ctr_ns, image.diff_ids)
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("containerd, docker.io/library/small:1.0:", *v2_requests(seen), sep="\n  ")
    assert seen, "containerd never asked regcache"
    assert all(e.query == "ns=docker.io" and e.status == 200 for e in seen), v2_requests(seen)
    assert all(e.path.startswith("/v2/library/small/") for e in seen)
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == blob_paths("library/small", image.blob_digests)


def test_second_registry_is_told_apart_by_ns(
    containerd: Containerd,
    ctr_ns: str,
    hosts_dir: Path,
    runtime_cache: RegcacheProcess,
    second_upstream: Upstream,
) -> None:
    image = second_upstream.images.tool
    mark = access_mark(runtime_cache)

    pulled = containerd.pull(ctr_ns, "ghcr.io/org/tool:2.0", hosts_dir)

    assert pulled.digest == registry_digest(second_upstream.url, "org/tool", "2.0")
    assert containerd.unpacked(ctr_ns, image.diff_ids)
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("containerd, ghcr.io/org/tool:2.0:", *v2_requests(seen), sep="\n  ")
    assert seen
    assert all(e.query == "ns=ghcr.io" and e.status == 200 for e in seen), v2_requests(seen)
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == blob_paths("org/tool", image.blob_digests)


def test_other_platform_of_a_multi_platform_image(
    containerd: Containerd,
    ctr_ns: str,
    hosts_dir: Path,
    runtime_cache: RegcacheProcess,
    upstream: Upstream,
) -> None:
    index = upstream.images.multi
    arm64, amd64 = index.image("linux", "arm64"), index.image("linux", "amd64")
    mark = access_mark(runtime_cache)

    pulled = containerd.pull(
        ctr_ns, "docker.io/library/multi:1.0", hosts_dir, platform="linux/arm64"
    )

    assert pulled.digest == registry_digest(upstream.url, "library/multi", "1.0")
    assert pulled.digest == index.index_digest
    assert containerd.unpacked(ctr_ns, arm64.diff_ids)
    assert not containerd.unpacked(ctr_ns, amd64.diff_ids)
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("containerd, docker.io/library/multi:1.0 linux/arm64:", *v2_requests(seen), sep="\n  ")
    manifests = {e.path for e in seen if e.method == "GET" and "/manifests/" in e.path}
    assert f"/v2/library/multi/manifests/{arm64.manifest_digest}" in manifests
    assert f"/v2/library/multi/manifests/{amd64.manifest_digest}" not in manifests
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == blob_paths("library/multi", arm64.blob_digests)
