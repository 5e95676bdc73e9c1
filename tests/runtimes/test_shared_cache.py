"""containerd, Docker Engine and podman behind one regcache: the upstream serves each blob once.

The image is ``library/docker-multi:1.0``, a Docker manifest list of schema-2 manifests (what
Docker Hub mostly serves), pulled by no other runtime test, so regcache starts cold for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.containerd import Containerd
from tests.support.dockerd import Dockerd
from tests.support.podman import Podman
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import (
    access_mark,
    regcache_requests,
    registry_digest,
    v2_requests,
)
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes


def test_three_runtimes_one_upstream_fetch_per_blob(
    containerd: Containerd,
    ctr_ns: str,
    hosts_dir: Path,
    docker: Dockerd,
    podman: Podman,
    runtime_cache: RegcacheProcess,
    upstream: Upstream,
) -> None:
    index = upstream.images.docker_multi
    amd64 = index.image("linux", "amd64")
    expected = registry_digest(upstream.url, "library/docker-multi", "1.0")
    assert expected == index.index_digest
    upstream_mark = upstream.registry.mark()
    mark = access_mark(runtime_cache)

    by_ctr = containerd.pull(ctr_ns, "docker.io/library/docker-multi:1.0", hosts_dir)
    by_docker = docker.pull("docker-multi:1.0")
    by_podman = podman.pull("docker.io/library/docker-multi:1.0")

    assert by_ctr.digest == expected
    assert by_docker.repo_digests == (f"docker-multi@{expected}",)
    assert by_podman.digest == expected
    assert by_docker.id == f"sha256:{by_podman.id}" == amd64.config_digest
    assert containerd.unpacked(ctr_ns, amd64.diff_ids)

    # Each runtime downloaded every blob from regcache...
    seen = regcache_requests(runtime_cache, mark)
    for agent in ("containerd/", "docker/", "containers/"):
        print(agent, *v2_requests(e for e in seen if agent in e.user_agent), sep="\n  ")
        blobs = {
            e.path.rsplit("/", 1)[1]
            for e in seen
            if agent in e.user_agent and e.method == "GET" and "/blobs/" in e.path
        }
        assert blobs == set(amd64.blob_digests), agent
    # ...and regcache fetched each from the upstream once.
    counts = {d: upstream.registry.blob_gets(d, since=upstream_mark) for d in amd64.blob_digests}
    print("upstream blob GETs:", counts)
    assert counts == dict.fromkeys(amd64.blob_digests, 1)
    assert upstream.registry.blob_gets(since=upstream_mark) == len(amd64.blob_digests)
