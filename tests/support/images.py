"""Deterministic test images written as OCI image layouts, with no external tools.

Layer contents are seeded random bytes, so they barely compress; gzip runs at level 1 only to
produce real ``tar+gzip`` layers that runtimes such as containerd can unpack, and the config's
``rootfs.diff_ids`` are the digests of the uncompressed tars, as those runtimes check.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Distribution 2.8 answers 404 for an OCI manifest unless Accept names the OCI types.
ACCEPT_ALL = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


@dataclass(frozen=True)
class MediaTypes:
    index: str
    manifest: str
    config: str
    layer: str


# "oci" is the default; "docker" (schema 2 + manifest list) is what Docker Hub mostly serves.
FLAVORS: dict[str, MediaTypes] = {
    "oci": MediaTypes(OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
    "docker": MediaTypes(DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
}

REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_PLATFORMS: tuple[tuple[str, str], ...] = (("linux", "amd64"), ("linux", "arm64"))
DEFAULT_LAYER_SIZES: tuple[int, ...] = (300 * 1024, 1024 * 1024, 2 * 1024 * 1024)
# A fixed timestamp keeps configs, tars and therefore every digest stable across runs.
_EPOCH_TEXT = "2024-01-01T00:00:00Z"
_EPOCH = 1704067200


@dataclass(frozen=True)
class ImageInfo:
    """One single-platform image stored in an OCI layout."""

    layout_dir: Path
    tag: str | None  # None for the per-platform members of an index
    os: str
    architecture: str
    manifest_digest: str
    manifest: bytes
    config_digest: str
    config: bytes
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]  # compressed blob sizes, as in the manifest
    diff_ids: tuple[str, ...]
    manifest_media_type: str = OCI_MANIFEST

    @property
    def blob_digests(self) -> tuple[str, ...]:
        """Config then layers: every blob a full pull fetches."""
        return (self.config_digest, *self.layer_digests)

    @property
    def total_layer_size(self) -> int:
        return sum(self.layer_sizes)

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.layout_dir, digest)

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()


@dataclass(frozen=True)
class IndexInfo:
    """A multi-platform image: an OCI image index and one ImageInfo per platform."""

    layout_dir: Path
    tag: str
    index_digest: str
    index: bytes
    images: tuple[ImageInfo, ...]
    index_media_type: str = OCI_INDEX

    def image(self, os: str = "linux", architecture: str = "amd64") -> ImageInfo:
        for img in self.images:
            if (img.os, img.architecture) == (os, architecture):
                return img
        raise KeyError(f"{self.tag} has no {os}/{architecture} image")

    @property
    def manifest_digests(self) -> tuple[str, ...]:
        return tuple(img.manifest_digest for img in self.images)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout_dir: Path, digest: str) -> Path:
    algorithm, _, hex_part = digest.partition(":")
    return Path(layout_dir) / "blobs" / algorithm / hex_part


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def build_image(
    layout_dir: Path,
    tag: str,
    seed: int,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    arch: str = "amd64",
    os: str = "linux",
    flavor: Literal["oci", "docker"] = "oci",
) -> ImageInfo:
    """Write a single-platform image into ``layout_dir`` under ``tag`` (replacing that tag)."""
    layout_dir = Path(layout_dir)
    _init_layout(layout_dir)
    types = FLAVORS[flavor]
    rng = random.Random(f"{seed}:{os}/{arch}")
    info = _write_image(layout_dir, tag, rng, layer_sizes, os, arch, types)
    _set_ref(layout_dir, tag, _descriptor(types.manifest, info.manifest_digest, info.manifest))
    return info


def build_index(
    layout_dir: Path,
    tag: str,
    seed: int,
    platforms: Sequence[tuple[str, str]] = DEFAULT_PLATFORMS,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    flavor: Literal["oci", "docker"] = "oci",
) -> IndexInfo:
    """Write an image index with one image per ``(os, arch)`` platform into ``layout_dir``."""
    layout_dir = Path(layout_dir)
    _init_layout(layout_dir)
    types = FLAVORS[flavor]
    images: list[ImageInfo] = []
    descriptors: list[dict[str, Any]] = []
    for os_name, arch in platforms:
        # Seeding per platform makes each platform's layers distinct, as in real images.
        rng = random.Random(f"{seed}:{os_name}/{arch}")
        img = _write_image(layout_dir, None, rng, layer_sizes, os_name, arch, types)
        images.append(img)
        desc = _descriptor(types.manifest, img.manifest_digest, img.manifest)
        desc["platform"] = {"architecture": arch, "os": os_name}
        descriptors.append(desc)
    index = canonical_json({"schemaVersion": 2, "mediaType": types.index, "manifests": descriptors})
    index_digest = _write_blob(layout_dir, index)
    _set_ref(layout_dir, tag, _descriptor(types.index, index_digest, index))
    return IndexInfo(
        layout_dir=layout_dir,
        tag=tag,
        index_digest=index_digest,
        index=index,
        images=tuple(images),
        index_media_type=types.index,
    )


def _write_image(
    layout_dir: Path,
    tag: str | None,
    rng: random.Random,
    layer_sizes: Sequence[int],
    os_name: str,
    arch: str,
    types: MediaTypes,
) -> ImageInfo:
    layer_digests: list[str] = []
    compressed_sizes: list[int] = []
    diff_ids: list[str] = []
    layer_descs: list[dict[str, Any]] = []
    for i, size in enumerate(layer_sizes):
        tar_bytes = _layer_tar(f"layer{i}.bin", rng.randbytes(size))
        gz = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
        digest = _write_blob(layout_dir, gz)
        layer_digests.append(digest)
        compressed_sizes.append(len(gz))
        diff_ids.append(sha256_digest(tar_bytes))
        layer_descs.append(_descriptor(types.layer, digest, gz))
    config = canonical_json(
        {
            "created": _EPOCH_TEXT,
            "architecture": arch,
            "os": os_name,
            "config": {
                "Cmd": ["/layer0.bin"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": _EPOCH_TEXT, "created_by": f"regcache test layer {i}"}
                for i in range(len(layer_sizes))
            ],
        }
    )
    config_digest = _write_blob(layout_dir, config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": types.manifest,
            "config": _descriptor(types.config, config_digest, config),
            "layers": layer_descs,
        }
    )
    manifest_digest = _write_blob(layout_dir, manifest)
    return ImageInfo(
        layout_dir=layout_dir,
        tag=tag,
        os=os_name,
        architecture=arch,
        manifest_digest=manifest_digest,
        manifest=manifest,
        config_digest=config_digest,
        config=config,
        layer_digests=tuple(layer_digests),
        layer_sizes=tuple(compressed_sizes),
        diff_ids=tuple(diff_ids),
        manifest_media_type=types.manifest,
    )


def _layer_tar(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo(name)
        member.size = len(content)
        member.mtime = _EPOCH
        member.mode = 0o755
        tar.addfile(member, io.BytesIO(content))
    return buf.getvalue()


def _descriptor(media_type: str, digest: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _write_blob(layout_dir: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    path = blob_path(layout_dir, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return digest


def _init_layout(layout_dir: Path) -> None:
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout_dir / "oci-layout"
    if not marker.exists():
        marker.write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = layout_dir / "index.json"
    if not index.exists():
        index.write_bytes(canonical_json({"schemaVersion": 2, "manifests": []}))


def _set_ref(layout_dir: Path, tag: str, descriptor: dict[str, Any]) -> None:
    index_path = layout_dir / "index.json"
    index = json.loads(index_path.read_bytes())
    manifests = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
    manifests.append({**descriptor, "annotations": {REF_NAME: tag}})
    index["manifests"] = manifests
    index_path.write_bytes(canonical_json(index))
