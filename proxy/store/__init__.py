"""Where cached content lives, behind small interfaces.

The handlers and the cache logic see only these interfaces, so that a shared backend
(an S3-compatible blob store, Redis for the index) can replace the local ones without
touching them. ``tests/store/`` holds the one conformance suite every implementation
must pass.

- ``BlobStore``: content-addressed blob files, written through a verifying ``BlobWriter``.
- ``ManifestStore``: manifest bytes by digest, byte-identical, with their media type.
- ``TagIndex``: (upstream, repository, tag, accepted types) -> digest, with when the
  upstream last confirmed it.
- ``UsageRecords``: for every cached blob and manifest, which (upstream, repository)
  pairs reference it and when each last served it. Access control and LRU eviction
  are built on these records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest, Hasher


class DigestMismatch(Exception):
    """Bytes written for a digest hash to something else; nothing was stored."""

    def __init__(self, expected: Digest, actual: str, size: int) -> None:
        super().__init__(f"expected {expected}, got {actual} over {size} bytes")
        self.expected = expected
        self.actual = actual
        self.size = size


class BlobWriter(ABC):
    """A blob being written. Readers may follow ``path`` while it grows.

    ``commit`` verifies the digest and makes the blob visible atomically; until then no
    reader of the store can see it.
    """

    path: Path
    written: int

    @abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    async def commit(self) -> None:
        """Raises DigestMismatch, after discarding the bytes."""

    @abstractmethod
    async def abort(self) -> None: ...

    @abstractmethod
    async def detach(self) -> Hasher:
        """Stop writing (the disk is full) and hand over the running hash.

        The bytes written so far stay readable at ``path`` until ``abort``; ``commit`` is no
        longer allowed. The hash covers every byte given to ``write``, stored or not.
        """


class BlobStore(ABC):
    @abstractmethod
    async def size(self, digest: Digest) -> int | None:
        """The stored blob's size, or None when it is not stored."""

    @abstractmethod
    def path(self, digest: Digest) -> Path:
        """The local file to serve with sendfile; only meaningful after size() found it."""

    @abstractmethod
    async def writer(self, digest: Digest) -> BlobWriter: ...

    @abstractmethod
    async def delete(self, digest: Digest) -> bool: ...

    @abstractmethod
    async def total_size(self) -> int: ...

    @abstractmethod
    def digests(self) -> AsyncIterator[Digest]: ...


class ManifestStore(ABC):
    @abstractmethod
    async def get_manifest(self, digest: Digest) -> StoredManifest | None: ...

    @abstractmethod
    async def put_manifest(self, manifest: StoredManifest) -> None:
        """Raises DigestMismatch when the body does not hash to the digest."""

    @abstractmethod
    async def delete_manifest(self, digest: Digest) -> bool: ...

    @abstractmethod
    def manifest_sizes(self) -> AsyncIterator[tuple[Digest, int]]:
        """Every stored manifest with its size in bytes."""


class TagIndex(ABC):
    @abstractmethod
    async def get_tag(self, key: TagKey) -> TagEntry | None: ...

    @abstractmethod
    async def put_tag(self, key: TagKey, entry: TagEntry) -> None: ...

    @abstractmethod
    async def delete_tag(self, key: TagKey) -> None: ...


class UsageRecords(ABC):
    @abstractmethod
    async def record_use(self, kind: Kind, digest: Digest, ref: RepoRef, when: float) -> None:
        """Remember that ``ref`` references the content and served it at ``when``."""

    @abstractmethod
    async def references(self, kind: Kind, digest: Digest) -> dict[RepoRef, float]:
        """Every (upstream, repository) that referenced the content, with its last use."""

    @abstractmethod
    async def forget(self, kind: Kind, digest: Digest) -> None: ...


class Index(ManifestStore, TagIndex, UsageRecords, ABC):
    """The metadata half of the cache; one backend usually holds all three."""

    @abstractmethod
    async def close(self) -> None: ...
