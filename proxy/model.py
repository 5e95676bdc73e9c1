"""The types every layer shares: what a request names, which repository, tags and manifests.

Pure data with no I/O, so parsing, routing, the stores and the cache can all speak of the
same things without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import BinaryIO

from proxy.oci.digest import Digest


class Kind(enum.Enum):
    """What a request path names. Only manifests and blobs are ever stored."""

    BASE = "base"
    MANIFEST = "manifest"
    BLOB = "blob"
    TAGS_LIST = "tags"
    BLOB_UPLOAD = "upload"


@dataclass(frozen=True, slots=True)
class RepoRef:
    upstream: str
    repository: str


@dataclass(frozen=True, slots=True)
class TagKey:
    upstream: str
    repository: str
    tag: str
    accept: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TagEntry:
    digest: Digest
    media_type: str
    size: int
    checked_at: float  # unix time the upstream last confirmed this digest


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What an upstream says a manifest or blob is, as an OCI descriptor's three fields.

    An answer may leave some out: ``digest`` when a manifest HEAD had no usable
    Docker-Content-Digest, ``size`` when there was no Content-Length.
    """

    digest: Digest | None
    media_type: str
    size: int | None


@dataclass(frozen=True, slots=True)
class FileSpan:
    """``count`` bytes of ``file`` from ``offset``, all of them on disk already: what the
    server hands to the kernel's sendfile."""

    file: BinaryIO
    offset: int
    count: int
