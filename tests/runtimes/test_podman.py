"""podman pulls through regcache named as a ``[[registry.mirror]]`` in ``registries.conf``.

The mirror's location carries the registry as a path (``regcache:5000/docker.io``), so podman
asks for ``/v2/docker.io/library/small/...`` and regcache's path-prefix routing picks the
upstream. Like Docker, podman falls back to the registry itself when a mirror fails, so the
tests check regcache's access log too.
"""

from __future__ import annotations

import pytest

from tests.support.podman import Podman
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import access_mark, regcache_requests, registry_digest, v2_requests
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes

AGENT = "containers/"  # containers/image, the library podman pulls with


def test_docker_io_image_pulls_through_the_mirror(
    podman: Podman, runtime_cache: RegcacheProcess, upstream: Upstream
) -> None:
    image = upstream.images.small
    mark = access_mark(runtime_cache)

    pulled = podman.pull("docker.io/library/small:1.0")

    assert pulled.digest == registry_digest(upstream.url, "library/small", "1.0")
    assert f"sha256:{pulled.id}" == image.config_digest
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("podman, docker.io/library/small:1.0:", *v2_requests(seen), sep="\n  ")
    assert "GET /v2/docker.io/library/small/manifests/1.0" in v2_requests(seen)
    v2 = [e for e in seen if e.path.startswith("/v2/") and e.path != "/v2/"]
    assert all(e.path.startswith("/v2/docker.io/library/small/") for e in v2)
    assert all(e.status == 200 for e in v2)
    blob_gets = {e.path for e in v2 if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == {f"/v2/docker.io/library/small/blobs/{d}" for d in image.blob_digests}


def test_second_registry_through_its_own_mirror_entry(
    podman: Podman, runtime_cache: RegcacheProcess, second_upstream: Upstream
) -> None:
    image = second_upstream.images.tool
    mark = access_mark(runtime_cache)

    pulled = podman.pull("ghcr.io/org/tool:2.0")

    assert pulled.digest == registry_digest(second_upstream.url, "org/tool", "2.0")
    assert f"sha256:{pulled.id}" == image.config_digest
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("podman, ghcr.io/org/tool:2.0:", *v2_requests(seen), sep="\n  ")
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == {f"/v2/ghcr.io/org/tool/blobs/{d}" for d in image.blob_digests}


def test_other_platform_of_a_multi_platform_image(
    podman: Podman, runtime_cache: RegcacheProcess, upstream: Upstream
) -> None:
    index = upstream.images.multi
    arm64 = index.image("linux", "arm64")
    mark = access_mark(runtime_cache)

    pulled = podman.pull("docker.io/library/multi:1.0", platform="linux/arm64")

    assert f"sha256:{pulled.id}" == arm64.config_digest
    assert f"docker.io/library/multi@{index.index_digest}" in pulled.repo_digests
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == {f"/v2/docker.io/library/multi/blobs/{d}" for d in arm64.blob_digests}
