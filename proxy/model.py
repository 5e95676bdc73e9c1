"""The types every layer shares: what a request names, which repository, tags and manifests.

Pure data with no I/O, so parsing, routing, the stores and the cache can all speak of the
same things without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Credentials:
    """A client's own user name and password for a passthrough upstream.

    Held in memory for as long as the client's requests need them, never printed: the
    password is left out of ``repr``, so no log line or error detail can carry it by accident.
    """

    username: str
    password: str = field(repr=False)
