"""Scheduled prefetch against a real Debian ``docker-registry``, and ``ls``/``rm``/``prune`` as
the command line runs them, beside the server, on the cache it filled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import RegcacheFactory
from tests.support import chromium, skopeo
from tests.support.httpclient import http_get
from tests.support.regcache import REPO_ROOT, RegcacheProcess, upstream_entry
from tests.support.upstreams import RegistryFactory, Upstream, UpstreamImages
from tests.support.waiting import wait_until


def prefetched(proxy: RegcacheProcess) -> dict[str, Any]:
    [state] = http_get(proxy.url + "/status.json").json()["prefetch"]
    assert isinstance(state, dict)
    return state


def test_prefetch_follows_a_moved_tag_and_the_cache_serves_it_offline(
    registry_factory: RegistryFactory,
    regcache_factory: RegcacheFactory,
    test_images: UpstreamImages,
    tmp_path: Path,
) -> None:
    registry = registry_factory()
    layout = test_images.layout_dir
    skopeo.push(layout, "small", f"{registry.host}/library/app:stable")
    proxy = regcache_factory(
        {
            "upstreams": [upstream_entry("docker.io", registry.url)],
            "prefetch": [{"images": ["docker.io/app:stable"], "every": "1s"}],
        }
    )
    old, new = test_images.small, test_images.app
    wait_until(lambda: prefetched(proxy)["digest"] == old.manifest_digest, "the first run")
    skopeo.push(layout, "app", f"{registry.host}/library/app:stable")
    # The interval is 1 s; the bound only keeps a slow machine from failing.
    wait_until(lambda: prefetched(proxy)["digest"] == new.manifest_digest, "the tag followed", 15)
    assert prefetched(proxy)["result"] == "ok"
    assert proxy.metric("regcache_prefetch_runs_total", result="ok") >= 2
    fetched = sum(old.layer_sizes) + sum(new.layer_sizes)
    assert proxy.metric("regcache_prefetch_bytes_total") >= fetched
    dom = chromium.dump_dom(proxy.url + "/")
    assert new.manifest_digest[:19] in dom
    proxy.stop()
    registry.stop()
    proxy.extra_args.append("--offline")
    proxy.start()
    pulled = skopeo.pull(proxy.ref("app", "stable"), tmp_path / "offline")
    assert pulled.manifest == new.manifest
    for digest in new.layer_digests:
        assert pulled.has_blob(digest)


def regcache_cli(proxy: RegcacheProcess, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "proxy", *args]
    argv += ["--config", str(proxy.config_path), "--cache-dir", str(proxy.cache_dir)]
    return subprocess.run(
        argv, env=proxy.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def listed(proxy: RegcacheProcess) -> list[dict[str, Any]]:
    done = regcache_cli(proxy, "ls", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_ls_and_rm_from_the_command_line_beside_the_server(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = regcache_factory({"upstreams": [upstream.entry("docker.io")]})
    images = upstream.images
    skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "small")
    skopeo.pull(proxy.ref("multi", "1.0"), tmp_path / "multi", platform=("linux", "arm64"))
    wait_until(lambda: len(listed(proxy)) == 2, "both tags recorded")
    multi, small = listed(proxy)
    assert (small["repository"], small["tag"], small["digest"]) == (
        "library/small",
        "1.0",
        images.small.manifest_digest,
    )
    assert small["platforms"] == ["linux/amd64"]
    assert small["size"] == len(images.small.manifest) + len(images.small.config) + sum(
        images.small.layer_sizes
    )
    assert multi["platforms"] == ["linux/amd64", "linux/arm64"]
    assert multi["digest"] == images.multi.index_digest

    done = regcache_cli(proxy, "rm", "docker.io/small:1.0")
    assert done.returncode == 0, done.stderr
    assert "removed 1 images, 1 manifests, 4 blobs" in done.stdout
    assert [row["repository"] for row in listed(proxy)] == ["library/multi"]
    blobs = {path.name for path in (proxy.cache_dir / "blobs").rglob("*") if path.is_file()}
    assert not {digest.split(":")[1] for digest in images.small.layer_digests} & blobs

    time.sleep(1.2)  # multi was last used over a second ago
    dry = regcache_cli(proxy, "prune", "--older-than", "1s", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = {(row["kind"], row["name"]) for row in json.loads(dry.stdout)}
    assert ("image", "docker.io/library/multi:1.0") in planned
    assert ("manifest", images.multi.index_digest) in planned
    assert "would be freed" in dry.stderr
    assert {path.name for path in (proxy.cache_dir / "blobs").rglob("*") if path.is_file()} == blobs
    # The server fetches again what rm took away.
    again = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "again")
    assert again.manifest == images.small.manifest
