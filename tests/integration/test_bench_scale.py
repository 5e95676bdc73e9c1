"""The scale benchmark's parts: synthetic images written into a real registry's storage are
what that registry serves, and ``python -m bench scale`` runs through with a small N.

Correctness only; the rates the benchmark prints are not asserted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from bench import scaleclient, synthetic
from tests.support import skopeo
from tests.support.regcache import REPO_ROOT
from tests.support.registry import Registry

IMAGES = 20


def test_the_registry_serves_the_synthetic_images(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "storage", work_dir=tmp_path / "registry")
    synthetic.write_images(registry.storage_dir, IMAGES)
    registry.start()
    try:
        image = synthetic.describe(IMAGES - 1)
        pulled = skopeo.pull(registry.ref(image.repository, image.tag), tmp_path / "out")
        manifest = pulled.manifest
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == image.manifest_digest
        assert [layer["digest"] for layer in json.loads(manifest)["layers"]] == [image.layer_digest]
        layer = pulled.blob(image.layer_digest)
        assert len(layer) == synthetic.LAYER_SIZE
        assert pulled.blob(image.config_digest) == synthetic.image_blobs(IMAGES - 1)[1]

        # The bench's own client pulls every one, each body checked against its digest.
        result = asyncio.run(
            scaleclient.run("127.0.0.1", registry.port, IMAGES, concurrency=4, processes=1)
        )
        assert (result.images, result.statuses) == (IMAGES, {200: 3 * IMAGES})
        digests = {synthetic.describe(i).layer_digest for i in range(IMAGES)}
        assert len(digests) == IMAGES
    finally:
        registry.stop()


def test_bench_scale_runs_through_with_a_few_images(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    argv = [sys.executable, "-m", "bench", "scale", "--images", "50", "--peers", "regcache"]
    argv += ["--burst", "100", "--idle", "200", "--hold", "1", "--head-seconds", "1"]
    argv += ["--no-install", "--json", str(out), "--work-dir", str(tmp_path)]
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    run = document["peers"]["regcache"]["runs"]["50"]
    assert run["cold"]["result"]["images"] == 50
    assert run["warm"]["result"]["images"] == 50
    # Warm pulls and the restart's cached manifest are served without the upstream.
    assert run["warm"]["upstream_requests"] == 0
    assert run["restart"]["upstream_requests"] == 0
    held = document["peers"]["regcache"]["connections"]["held"]
    assert held["opened"] == 200
    assert out.with_suffix(".md").read_text().startswith("| scenario |")
