"""Bundles with real parts: exported from a cache warmed from a Debian ``docker-registry``,
read by skopeo, imported into a fresh cache that ``regcache serve --offline`` serves, and
imported beside a server under load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import skopeo
from tests.support.bundles import APP, MULTI, SMALL, CacheDir
from tests.support.images import ImageInfo
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bundle(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three standard images fetched from the upstream by export itself, in one bundle."""
    work = tmp_path_factory.mktemp("bundle")
    near = CacheDir.make(work / "near", [upstream.entry("docker.io")])
    path = work / "bundle.tar"
    near.ok("export", SMALL, MULTI, APP, "--fetch", "-o", str(path))
    return path


def assert_same_image(pulled: skopeo.PulledImage, image: ImageInfo) -> None:
    assert pulled.manifest == image.manifest
    for digest in image.blob_digests:
        assert pulled.blob(digest) == image.blob(digest), digest


def test_skopeo_reads_each_image_of_a_bundle_as_it_is(
    bundle: Path, upstream: Upstream, tmp_path: Path
) -> None:
    images = upstream.images
    for name, image in ((SMALL, images.small), (APP, images.app)):
        pulled = skopeo.copy_from_archive(bundle, name, tmp_path / name.replace("/", "_"))
        assert_same_image(pulled, image)
    pulled = skopeo.copy_from_archive(bundle, MULTI, tmp_path / "multi", all_images=True)
    assert pulled.manifest == images.multi.index
    for child in images.multi.images:
        assert pulled.instance_manifest(child.manifest_digest) == child.manifest
        for digest in child.blob_digests:
            assert pulled.blob(digest) == child.blob(digest)


@pytest.fixture
def far(upstream: Upstream, tmp_path: Path) -> CacheDir:
    """A fresh cache directory whose config names the upstream, which it never asks."""
    return CacheDir.make(tmp_path / "far", [upstream.entry("docker.io")])


@pytest.fixture
def offline_server(far: CacheDir, tmp_path: Path) -> Iterator[RegcacheProcess]:
    server = far.server(tmp_path / "server", "--offline")
    server.start()
    yield server
    server.stop()


def test_an_imported_bundle_is_pulled_offline_byte_identical(
    bundle: Path, far: CacheDir, offline_server: RegcacheProcess, upstream: Upstream, tmp_path: Path
) -> None:
    far.ok("import", str(bundle))
    images = upstream.images
    for repository, image in (("library/small", images.small), ("org/app", images.app)):
        out = tmp_path / repository.replace("/", "_")
        pulled = skopeo.pull(f"{offline_server.host}/{repository}:1.0", out)
        assert_same_image(pulled, image)
    for child in images.multi.images:
        pulled = skopeo.pull(
            f"{offline_server.host}/library/multi:1.0",
            tmp_path / f"multi-{child.architecture}",
            platform=(child.os, child.architecture),
        )
        assert_same_image(pulled, child)


async def test_an_import_beside_a_server_under_load_disturbs_no_pull(
    bundle: Path, far: CacheDir, offline_server: RegcacheProcess, upstream: Upstream, tmp_path: Path
) -> None:
    small_only = tmp_path / "small.tar"
    CacheDir(far.config, tmp_path / "scratch").ok("import", str(bundle))
    CacheDir(far.config, tmp_path / "scratch").ok("export", SMALL, "-o", str(small_only))
    far.ok("import", str(small_only))

    pulls = 0
    stop = asyncio.Event()

    async def pull_small_until_stopped(worker: int) -> None:
        nonlocal pulls
        while not stop.is_set():
            out = tmp_path / f"load-{worker}-{pulls}"
            pulled = await skopeo.pull_async(f"{offline_server.host}/library/small:1.0", out)
            assert pulled.manifest == upstream.images.small.manifest
            pulls += 1

    pid = offline_server.pid
    load = [asyncio.create_task(pull_small_until_stopped(n)) for n in range(4)]
    done = await asyncio.to_thread(far.run, "import", str(bundle))
    stop.set()
    await asyncio.gather(*load)
    assert done.returncode == 0, done.stderr
    assert pulls >= 4
    pulled = skopeo.pull(f"{offline_server.host}/org/app:1.0", tmp_path / "app")
    assert_same_image(pulled, upstream.images.app)
    assert offline_server.running
    assert offline_server.pid == pid


def test_an_archive_skopeo_wrote_is_imported_under_the_name_given(
    upstream: Upstream, far: CacheDir, tmp_path: Path
) -> None:
    archive = tmp_path / "skopeo.tar"
    skopeo.copy_to_archive(upstream.ref("library/small", "1.0"), archive, "1.0")
    refused = far.run("import", str(archive))
    assert refused.returncode == 1
    assert "give its full name with --name" in refused.stderr
    far.ok("import", str(archive), "--name", "docker.io/library/small:1.0")
    server = far.server(tmp_path / "server", "--offline")
    server.start()
    try:
        pulled = skopeo.pull(f"{server.host}/library/small:1.0", tmp_path / "pulled")
    finally:
        server.stop()
    assert_same_image(pulled, upstream.images.small)


def blob_bytes(cache: CacheDir) -> int:
    return sum(p.stat().st_size for p in (cache.cache_dir / "blobs").rglob("*") if p.is_file())


def test_an_import_beside_a_bounded_server_is_evicted_to_its_bound(
    bundle: Path, far: CacheDir, tmp_path: Path
) -> None:
    """The monthly bundle of an edge site, imported while its bounded server runs."""
    config = {**yaml.safe_load(far.config.read_text()), "cache": {"max_size": "2MiB"}}
    server = RegcacheProcess(
        config, work_dir=tmp_path / "server", cache_dir=far.cache_dir, extra_args=["--offline"]
    )
    server.start()
    try:
        far.ok("import", str(bundle))  # the three images hold several MiB
        # The server's next pass, within its 10 s look at the index's change counter.
        wait_until(lambda: blob_bytes(far) <= 2 * MIB, "eviction to the bound")
        assert server.metric("regcache_evictions_total") > 0
        assert server.metric("regcache_cache_size_bytes") == blob_bytes(far)
    finally:
        server.stop()
