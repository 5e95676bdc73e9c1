"""Docker Engine pulls docker.io images through regcache named in ``registry-mirrors``.

Docker sends a mirror the plain name (``/v2/library/small/...``, no ``ns``), so regcache's
default upstream answers. When the mirror fails Docker quietly falls back to Docker Hub (here a
DNS failure), so a successful ``docker pull`` alone proves nothing: these tests check regcache's
own access log and metrics for the pull.
"""

from __future__ import annotations

import pytest

from tests.support.dockerd import Dockerd, daemon_json
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import access_mark, regcache_requests, registry_digest, v2_requests
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes

AGENT = "docker/"


def test_daemon_runs_with_the_readme_mirror_setting(
    dockerd: Dockerd, runtime_cache: RegcacheProcess
) -> None:
    assert dockerd.settings.items() >= daemon_json(runtime_cache.host).items()
    mirrors = dockerd.info()["RegistryConfig"]["Mirrors"]
    assert mirrors == [f"http://{runtime_cache.host}/"]


def test_oci_image_pull_goes_through_the_mirror(
    docker: Dockerd, runtime_cache: RegcacheProcess, upstream: Upstream
) -> None:
    image = upstream.images.small
    mark = access_mark(runtime_cache)
    hits_before = runtime_cache.metric(
        "regcache_cache_requests_total", upstream="docker.io", kind="blob"
    )

    pulled = docker.pull("small:1.0")

    digest = registry_digest(upstream.url, "library/small", "1.0")
    assert pulled.repo_digests == (f"small@{digest}",)
    assert pulled.id == image.config_digest
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("docker, small:1.0:", *v2_requests(seen), sep="\n  ")
    assert v2_requests(seen)[:2] == ["GET /v2/", "HEAD /v2/library/small/manifests/1.0"]
    assert all(e.status == 200 and e.query == "" for e in seen), v2_requests(seen)
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == {f"/v2/library/small/blobs/{d}" for d in image.blob_digests}
    hits_after = runtime_cache.metric(
        "regcache_cache_requests_total", upstream="docker.io", kind="blob"
    )
    assert hits_after - hits_before == len(image.blob_digests)


def test_multi_platform_index_pull_takes_the_host_platform(
    docker: Dockerd, runtime_cache: RegcacheProcess, upstream: Upstream
) -> None:
    index = upstream.images.multi
    amd64 = index.image("linux", "amd64")
    mark = access_mark(runtime_cache)

    pulled = docker.pull("multi:1.0")

    assert pulled.repo_digests == (f"multi@{index.index_digest}",)
    assert pulled.id == amd64.config_digest
    seen = regcache_requests(runtime_cache, mark, agent=AGENT)
    print("docker, multi:1.0:", *v2_requests(seen), sep="\n  ")
    assert f"GET /v2/library/multi/manifests/{amd64.manifest_digest}" in v2_requests(seen)
    blob_gets = {e.path for e in seen if e.method == "GET" and "/blobs/" in e.path}
    assert blob_gets == {f"/v2/library/multi/blobs/{d}" for d in amd64.blob_digests}
