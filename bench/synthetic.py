"""N small synthetic images written straight into a Distribution registry's filesystem storage.

Pushing thousands of images through the registry API (skopeo) takes far too long for the scale
benchmark, so this writes the files a push would leave: each image is an OCI manifest, a config
and one 4 KiB layer of seeded random bytes (so every digest is distinct), linked into its
repository under a tag. Image ``i`` is ``scale/rNNNN:tNN``: 100 tags per repository.

The layout (Distribution 2.x, ``docker/registry/v2`` under the storage root):

* ``blobs/sha256/<2 hex>/<hex>/data``: every blob, the manifest included;
* ``repositories/<repo>/_layers/sha256/<hex>/link``: the repository may serve the blob;
* ``repositories/<repo>/_manifests/revisions/sha256/<hex>/link``: the manifest is in the repo;
* ``repositories/<repo>/_manifests/tags/<tag>/current/link`` and
  ``.../tags/<tag>/index/sha256/<hex>/link``: the tag and its history.

Each link file holds the digest, ``sha256:<hex>``, with no newline.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

LAYER_SIZE = 4096
TAGS_PER_REPOSITORY = 100
SEED = 20261203
# Large enough that the pool's hand-off costs nothing beside the file writes.
_CHUNK = 2000


@dataclass(frozen=True)
class SyntheticImage:
    index: int
    repository: str
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digest: str


def image_name(index: int) -> tuple[str, str]:
    """(repository, tag) of the ``index``-th image."""
    return f"scale/r{index // TAGS_PER_REPOSITORY:04d}", f"t{index % TAGS_PER_REPOSITORY:02d}"


def image_blobs(index: int) -> tuple[bytes, bytes, bytes]:
    """(manifest, config, layer) of the ``index``-th image; the same bytes on every run."""
    layer = random.Random(SEED + index).randbytes(LAYER_SIZE)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.scale.index": str(index)}},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": LAYER_SIZE}],
        },
        separators=(",", ":"),
    ).encode()
    return manifest, config, layer


def describe(index: int) -> SyntheticImage:
    manifest, config, layer = image_blobs(index)
    repository, tag = image_name(index)
    return SyntheticImage(
        index, repository, tag, _digest(manifest), _digest(config), _digest(layer)
    )


def write_images(storage_dir: Path, count: int, workers: int | None = None) -> None:
    """Images 0..count-1 into the storage of a registry that is not running (or not yet)."""
    root = storage_dir / "docker" / "registry" / "v2"
    chunks = [(str(root), start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            _write_range(*chunk)
        return
    with ProcessPoolExecutor(workers) as pool:
        for _ in pool.map(_write_range, *zip(*chunks, strict=True)):
            pass


def _write_range(root_text: str, start: int, stop: int) -> None:
    root = Path(root_text)
    made: set[Path] = set()
    for index in range(start, stop):
        manifest, config, layer = image_blobs(index)
        repository, tag = image_name(index)
        store_image(root, repository, tag, manifest, (config, layer), made)


def store_image(
    root: Path, repository: str, tag: str, manifest: bytes, blobs: Iterable[bytes], made: set[Path]
) -> str:
    """One image into the registry storage at ``root``: its ``blobs``, linked into the
    repository, and its manifest, tagged; the manifest's hex digest. ``made``: the
    directories this process has made so far."""
    repo = root / "repositories" / repository
    for blob in blobs:
        hexdigest = _write_blob(root, blob, made)
        _write_link(repo / "_layers" / "sha256" / hexdigest, made)
    hexdigest = _write_blob(root, manifest, made)
    manifests = repo / "_manifests"
    _write_link(manifests / "revisions" / "sha256" / hexdigest, made)
    _write_link(manifests / "tags" / tag / "current", made, hexdigest)
    _write_link(manifests / "tags" / tag / "index" / "sha256" / hexdigest, made)
    return hexdigest


def blob_path(root: Path, hexdigest: str) -> Path:
    return root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"


def _write_blob(root: Path, blob: bytes, made: set[Path]) -> str:
    hexdigest = hashlib.sha256(blob).hexdigest()
    path = blob_path(root, hexdigest)
    _mkdir(path.parent, made)
    path.write_bytes(blob)
    return hexdigest


def _write_link(directory: Path, made: set[Path], hexdigest: str | None = None) -> None:
    """``directory/link`` holding ``sha256:<hex>``; the hex is the directory's name unless
    given (a tag's ``current`` link)."""
    _mkdir(directory, made)
    (directory / "link").write_text(f"sha256:{hexdigest or directory.name}")


def _mkdir(directory: Path, made: set[Path]) -> None:
    # Most parents (a repository's, a blob prefix's) repeat: a directory whose parent this
    # process made costs one mkdir, not the failed attempt and retry of parents=True.
    if directory in made:
        return
    if directory.parent in made:
        directory.mkdir(exist_ok=True)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        made.add(directory.parent)
    made.add(directory)


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def images(count: int) -> Iterator[SyntheticImage]:
    return (describe(i) for i in range(count))
