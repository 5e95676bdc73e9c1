"""The README's air-gapped walkthrough, run as it is written: each ``<!-- airgap:... -->``
block in a shell of its own, in one directory, with ``regcache`` this checkout and a
Distribution registry standing in for Docker Hub (``DOCKER_HUB``). The registry is stopped
whenever the walkthrough is on the air-gapped side, so anything there that asked an upstream
would fail.

The figures the issue asks for (bundle sizes against the images, export and import times)
are printed, for the closing note; nothing here is timed against a limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RegistryFactory
from tests.support import skopeo
from tests.support.images import build_image
from tests.support.registry import Registry
from tests.support.runtimes import clean_env, readme_text
from tests.support.upstreams import KIB, MIB, UpstreamImages

ROOT = Path(__file__).resolve().parents[2]
# The names the README uses, and the standard test image each stands for.
README_IMAGES = (
    ("library/alpine:3.20", "small"),
    ("library/nginx:1.27", "multi"),
    ("library/redis:7.2", "app"),
)
SITE_PORT = 5000


def snippet(name: str) -> str:
    found = re.search(rf"<!-- airgap:{name} -->\n```sh\n(.*?)```", readme_text(), re.S)
    assert found is not None, f"README.md has no airgap:{name} block"
    return found[1]


@pytest.fixture
def walk_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the walkthrough's commands run; whatever server it started goes at the end."""
    yield tmp_path
    pid_file = tmp_path / "regcache.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


@pytest.fixture
def shell_env(tmp_path: Path, hub: Registry) -> dict[str, str]:
    """``regcache`` on PATH runs this checkout, whatever is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "regcache"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proxy "$@"\n')
    shim.chmod(0o755)
    env = clean_env({"DOCKER_HUB": hub.url, "PYTHONPATH": str(ROOT)})
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


@pytest.fixture
def hub(registry_factory: RegistryFactory, test_images: UpstreamImages) -> Registry:
    registry = registry_factory()
    for name, layout_tag in README_IMAGES:
        skopeo.push(
            test_images.layout_dir,
            layout_tag,
            f"{registry.host}/{name}",
            all_images=layout_tag == "multi",
        )
    return registry


def run_step(name: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", snippet(name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - started
    print(f"--- airgap:{name} ({took:.2f} s) ---\n{done.stdout}{done.stderr[-6000:]}")
    assert done.returncode == 0, f"airgap:{name} failed; see the output above"
    return took


def push_next_alpine(hub: Registry, tmp_path: Path) -> None:
    """alpine:3.21: alpine:3.20's three layers (same seed, same sizes) and one more."""
    layout = tmp_path / "next-layout"
    build_image(layout, "next", seed=1, layer_sizes=[300 * KIB, MIB, 2 * MIB, 256 * KIB])
    skopeo.push(layout, "next", f"{hub.host}/library/alpine:3.21")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_walkthrough(
    hub: Registry, walk_dir: Path, shell_env: dict[str, str], test_images: UpstreamImages
) -> None:
    assert port_free(SITE_PORT), f"the walkthrough serves on 127.0.0.1:{SITE_PORT}; it is taken"
    images_size = sum(
        info.total_layer_size + len(info.config) + len(info.manifest)
        for info in (test_images.small, test_images.app, *test_images.multi.images)
    )
    export_time = run_step("connected", walk_dir, shell_env)
    bundle = walk_dir / "bundle.tar"
    with hub.stopped():
        import_time = run_step("site", walk_dir, shell_env)
        small = test_images.small
        blobs = walk_dir / "alpine" / "blobs" / "sha256"
        # Byte-identical to what Docker Hub's stand-in holds: manifest, config and layers.
        assert (
            blobs / small.manifest_digest.removeprefix("sha256:")
        ).read_bytes() == small.manifest
        for digest in small.blob_digests:
            assert (blobs / digest.removeprefix("sha256:")).read_bytes() == small.blob(digest)
        run_step("inventory", walk_dir, shell_env)
    push_next_alpine(hub, walk_dir)
    run_step("update", walk_dir, shell_env)
    with hub.stopped():
        run_step("site-update", walk_dir, shell_env)
    update = walk_dir / "update.tar"
    with tarfile.open(update) as archive:
        carried = {
            m.name for m in archive.getmembers() if m.isfile() and m.name.startswith("blobs/")
        }
    # The site had alpine:3.20's layers: the update carries the new layer, config, manifest.
    assert len(carried) == 3, carried
    print(
        json.dumps(
            {
                "images_bytes": images_size,
                "bundle_bytes": bundle.stat().st_size,
                "update_bytes": update.stat().st_size,
                "connected_step_s": round(export_time, 2),
                "site_step_s": round(import_time, 2),
            }
        )
    )
