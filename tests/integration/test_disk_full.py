"""A cache directory on a tiny filesystem: ENOSPC mid-blob costs caching, never the pull."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.images import ImageInfo, build_image
from tests.support.upstreams import Upstream

MIB = 1024 * 1024


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: room for the index and small blobs, not for a 12 MiB layer."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def large(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> ImageInfo:
    layout = tmp_path_factory.mktemp("large-layout")
    image = build_image(layout, "large", seed=51, layer_sizes=[12 * MIB, 64 * 1024])
    skopeo.push(layout, "large", f"{upstream.host}/library/large:1.0")
    return image


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.read()


async def test_disk_full_mid_blob_still_serves_every_client(
    tiny_fs: Path,
    upstream: Upstream,
    regcache_factory: RegcacheFactory,
    large: ImageInfo,
    tmp_path: Path,
) -> None:
    proxy = regcache_factory(
        {"upstreams": [upstream.entry("docker.io")]}, cache_dir=tiny_fs / "cache"
    )
    digest = large.layer_digests[0]
    url = f"{proxy.url}/v2/library/large/blobs/{digest}"
    bodies = await asyncio.gather(*(fetch(url) for _ in range(3)))
    assert all(hashlib.sha256(body).hexdigest() == digest[7:] for body in bodies)
    assert proxy.metric("regcache_cache_write_failures_total", reason="disk_full") >= 1
    assert not list((tiny_fs / "cache" / "blobs").rglob(digest[7:]))
    assert list((tiny_fs / "cache" / "tmp").iterdir()) == []
    assert proxy.log_text().count("cache disk full") == 1

    # Whole pulls keep working: the small blobs are cached, the large one is passed through.
    pulled = await asyncio.to_thread(skopeo.pull, proxy.ref("large", "1.0"), tmp_path / "out")
    assert pulled.manifest == large.manifest
    assert hashlib.sha256(pulled.blob(digest)).hexdigest() == digest[7:]
    assert list((tiny_fs / "cache" / "blobs").rglob(large.layer_digests[1][7:]))
    assert proxy.running
