"""Manifest media types and the Accept header lists clients send."""

from __future__ import annotations

from collections.abc import Iterable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Distribution rejects a pull with more than this; so do we, without buffering it all.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def accepted_types(header_lines: Iterable[str]) -> tuple[str, ...]:
    """The media types of every Accept line, parameters dropped, sorted and deduplicated.

    The result keys the tag index: the digest a tag resolves to can depend on what the
    client accepts (a manifest list for new clients, one manifest for old ones).
    """
    types: set[str] = set()
    for line in header_lines:
        for item in line.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type:
                types.add(media_type)
    return tuple(sorted(types))
