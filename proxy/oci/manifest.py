"""What a manifest references: the blobs and manifests a repository must hold to serve it.

Pure and tolerant: a body that is not a manifest references nothing, and a descriptor
that is not one is skipped, so a hostile upstream can at most make a repository reference
less than it does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.oci.digest import Digest, InvalidDigest

# Far beyond any real image (Distribution refuses manifests over 4 MiB anyway); a bound on
# the work one manifest can cause.
MAX_REFERENCES = 10_000


@dataclass(frozen=True, slots=True)
class ManifestReferences:
    blobs: tuple[Digest, ...] = ()
    manifests: tuple[Digest, ...] = ()


def references(body: bytes) -> ManifestReferences:
    """The config and layers (and an artifact's blobs) of an image manifest, the child
    manifests of an index, and a referrer's subject; nothing for anything else."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return ManifestReferences()
    if not isinstance(document, dict):
        return ManifestReferences()
    blobs = _digests([document.get("config")], "digest")
    blobs += _digests(_list(document.get("layers")), "digest")
    blobs += _digests(_list(document.get("blobs")), "digest")
    blobs += _digests(_list(document.get("fsLayers")), "blobSum")  # Docker schema 1
    manifests = _digests(_list(document.get("manifests")), "digest")
    manifests += _digests([document.get("subject")], "digest")
    return ManifestReferences(tuple(blobs[:MAX_REFERENCES]), tuple(manifests[:MAX_REFERENCES]))


def _list(value: Any) -> list[Any]:
    return value[:MAX_REFERENCES] if isinstance(value, list) else []


def _digests(descriptors: list[Any], field: str) -> list[Digest]:
    found = []
    for descriptor in descriptors:
        if not isinstance(descriptor, dict):
            continue
        text = descriptor.get(field)
        if not isinstance(text, str):
            continue
        try:
            found.append(Digest.parse(text))
        except InvalidDigest:
            continue
    return found
