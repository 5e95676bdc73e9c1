"""containerd and regcache bundles: ``ctr images import`` reads a ``regcache export`` bundle as
it is, every image under its full name (``io.containerd.image.name``), with its digest, and
unpacked; and containerd pulls an imported bundle from an offline regcache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtimes.conftest import REGISTRIES
from tests.support.bundles import APP, MULTI, SMALL, CacheDir
from tests.support.containerd import SNAPSHOTTER, Containerd, write_hosts_dir
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes


def test_ctr_imports_a_bundle_under_the_images_full_names(
    containerd: Containerd, ctr_ns: str, upstream: Upstream, tmp_path: Path
) -> None:
    near = CacheDir.make(tmp_path / "near", [upstream.entry("docker.io")])
    bundle = tmp_path / "bundle.tar"
    near.ok("export", SMALL, MULTI, APP, "--fetch", "-o", str(bundle))

    containerd.ctr(ctr_ns, "images", "import", "--snapshotter", SNAPSHOTTER, str(bundle))

    images = upstream.images
    found = {image.ref: image.digest for image in containerd.images(ctr_ns)}
    assert found == {
        SMALL: images.small.manifest_digest,
        MULTI: images.multi.index_digest,
        APP: images.app.manifest_digest,
    }
    assert containerd.unpacked(ctr_ns, images.small.diff_ids)
    assert containerd.unpacked(ctr_ns, images.app.diff_ids)


def test_ctr_pulls_an_imported_bundle_from_an_offline_regcache(
    containerd: Containerd, ctr_ns: str, upstream: Upstream, tmp_path: Path
) -> None:
    """The far side: a bundle imported into a fresh cache, served by ``serve --offline``, and
    pulled by containerd through its hosts.toml mirror, unpacked; the upstream hears nothing."""
    near = CacheDir.make(tmp_path / "near", [upstream.entry("docker.io")])
    bundle = tmp_path / "bundle.tar"
    near.ok("export", SMALL, APP, "--fetch", "-o", str(bundle))
    mark = upstream.registry.mark()

    far = CacheDir.make(tmp_path / "far", [upstream.entry("docker.io")])
    far.ok("import", str(bundle))
    server = far.server(tmp_path / "far-server", "--offline")
    server.start()
    try:
        hosts = write_hosts_dir(tmp_path / "certs.d", server.host, REGISTRIES)
        for ref, image in ((SMALL, upstream.images.small), (APP, upstream.images.app)):
            pulled = containerd.pull(ctr_ns, ref, hosts)
            assert pulled.digest == image.manifest_digest
            assert containerd.unpacked(ctr_ns, image.diff_ids)
    finally:
        server.stop()
    assert upstream.registry.requests(mark) == []
