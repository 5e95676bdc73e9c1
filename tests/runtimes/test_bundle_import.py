"""``ctr images import`` reads a ``regcache export`` bundle as it is: every image under its full
name (``io.containerd.image.name``), with its digest, and unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bundles import APP, MULTI, SMALL, CacheDir
from tests.support.containerd import SNAPSHOTTER, Containerd
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
