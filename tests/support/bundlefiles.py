"""Bundles made in the test's process (the fast suite's export and import tests): the archive's
files, and the tags and blob files of the cache a bundle was imported into."""

from __future__ import annotations

import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxy.store.diskindex import DiskIndex

IMAGE = "docker.io/library/app:1.0"
# ``await cli("export", IMAGE, "-o", ..., cache=DIR)``, as tests/fast/conftest.py's cli fixture.
Run = Callable[..., Awaitable[int]]


def entries(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


async def tags_of(cache: Path) -> dict[str, str]:
    index = DiskIndex(cache / "index")
    try:
        return {f"{k.repository}:{k.tag}": str(e.digest) async for k, e in index.tags()}
    finally:
        await index.close()


def read(path: Path) -> bytes:
    return path.read_bytes()


def blob_files(cache: Path) -> set[str]:
    return {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}
