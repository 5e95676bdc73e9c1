"""The OCI image layout, as a bundle carries it: ``oci-layout``, ``index.json`` and
``blobs/<algorithm>/<hex>``. Pure code: the documents and the names, no files.

Each image is one descriptor of ``index.json``, named twice: ``io.containerd.image.name`` is
what ``ctr images import`` reads, ``org.opencontainers.image.ref.name`` what
``skopeo copy oci-archive:FILE:NAME`` matches; both hold the full reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.mediatypes import OCI_INDEX

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
# index.json is the one entry read whole; far more than any bundle's list of images needs.
MAX_INDEX_BYTES = 64 * 1024 * 1024


class InvalidLayout(ValueError):
    """Not an OCI image layout regcache can read; the message says which part."""


@dataclass(frozen=True, slots=True)
class LayoutImage:
    """One descriptor of ``index.json``: an image's top manifest, and its name if it has one."""

    digest: Digest
    media_type: str
    size: int
    name: str | None  # the containerd name, else the OCI ref name; None without either


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def blob_digest(path: str) -> Digest | None:
    """The digest a ``blobs/...`` entry claims to be, None for any other path; raises
    InvalidLayout for a blob path that names no digest regcache can verify."""
    parts = path.removeprefix("./").split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    try:
        return Digest.parse(f"{parts[1]}:{parts[2]}")
    except InvalidDigest as exc:
        raise InvalidLayout(f"{path}: {exc}") from None


def layout_document() -> bytes:
    return json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()


def index_document(images: list[tuple[str, LayoutImage]]) -> bytes:
    """``index.json`` listing each (full name, image), both name annotations set."""
    manifests = [
        {
            "mediaType": image.media_type,
            "digest": str(image.digest),
            "size": image.size,
            "annotations": {CONTAINERD_NAME: name, REF_NAME: name},
        }
        for name, image in images
    ]
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(document, indent=2).encode()


def parse_index(body: bytes) -> list[LayoutImage]:
    """The images ``index.json`` lists; raises InvalidLayout naming what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidLayout(f"{INDEX_FILE} is not JSON: {exc}") from None
    manifests = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(manifests, list):
        raise InvalidLayout(f"{INDEX_FILE} has no manifests list")
    return [_image(position, entry) for position, entry in enumerate(manifests)]


def _image(position: int, entry: Any) -> LayoutImage:
    where = f"{INDEX_FILE} manifests[{position}]"
    if not isinstance(entry, dict):
        raise InvalidLayout(f"{where} is not a descriptor")
    media_type, size, digest = entry.get("mediaType"), entry.get("size"), entry.get("digest")
    if not isinstance(media_type, str) or not isinstance(size, int) or not isinstance(digest, str):
        raise InvalidLayout(f"{where} lacks a mediaType, size or digest")
    try:
        parsed = Digest.parse(digest)
    except InvalidDigest as exc:
        raise InvalidLayout(f"{where}: {exc}") from None
    annotations = entry.get("annotations")
    names = annotations if isinstance(annotations, dict) else {}
    name = names.get(CONTAINERD_NAME) or names.get(REF_NAME)
    return LayoutImage(parsed, media_type, size, name if isinstance(name, str) else None)
