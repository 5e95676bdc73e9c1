"""The soak's images, written straight into a Distribution registry's filesystem storage.

Hundreds of small images (config + one small layer, ``soak/sNNNN:v1``) so that cold pulls go
on for the whole soak, and a few with layers of tens of MB (``soak/large-N:v1``) for Range
requests and long transfers. Pushing each with skopeo would take minutes: the files a push
leaves are written as the scale part writes its own (``synthetic.store_image``).

Layer bytes are random (the registry never unpacks them), so every digest is distinct. The
client checks what it receives against the blob files themselves.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

from .synthetic import blob_path, store_image

TAG = "v1"
MB = 1_000_000


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path  # the registry's data file: the truth the client compares against


@dataclass(frozen=True)
class SoakImage:
    repository: str
    tag: str
    manifest: bytes
    manifest_digest: str
    blobs: tuple[Blob, ...]  # config first, then the layers

    @property
    def large(self) -> bool:
        return any(b.size >= MB for b in self.blobs)


def write_images(
    storage_dir: Path, small: int, large_sizes: tuple[int, ...], seed: int
) -> tuple[list[SoakImage], list[SoakImage]]:
    """(small images, large images) into the storage of a registry not yet started."""
    root = storage_dir / "docker" / "registry" / "v2"
    rng = random.Random(seed)
    smalls = [
        _write_image(root, f"soak/s{i:04d}", (rng.randrange(2_000, 64_000),), rng)
        for i in range(small)
    ]
    larges = [
        _write_image(root, f"soak/large-{i}", (200_000, size), rng)
        for i, size in enumerate(large_sizes)
    ]
    return smalls, larges


def _write_image(
    root: Path, repository: str, layer_sizes: tuple[int, ...], rng: random.Random
) -> SoakImage:
    layer_data = [rng.randbytes(size) for size in layer_sizes]
    layers = [_blob(root, data) for data in layer_data]
    config_bytes = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.soak.repository": repository}},
            "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
        },
        separators=(",", ":"),
    ).encode()
    config = _blob(root, config_bytes)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER_GZIP, b) for b in layers],
        },
        separators=(",", ":"),
    ).encode()
    hexdigest = store_image(root, repository, TAG, manifest, [*layer_data, config_bytes], set())
    return SoakImage(repository, TAG, manifest, f"sha256:{hexdigest}", (config, *layers))


def _blob(root: Path, data: bytes) -> Blob:
    """What the soak knows of a blob ``store_image`` writes: its digest, size and file."""
    hexdigest = hashlib.sha256(data).hexdigest()
    return Blob(f"sha256:{hexdigest}", len(data), blob_path(root, hexdigest))


def _descriptor(media_type: str, blob: Blob) -> dict[str, object]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size}
