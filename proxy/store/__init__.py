"""Where cached content lives, behind small interfaces.

The handlers and the cache logic see only these interfaces, so that a shared backend
(an S3-compatible blob store, Redis for the index) can replace the local ones without
touching them. ``tests/store/`` holds the one conformance suite every implementation
must pass.

- ``BlobStore``: content-addressed blobs, written as a stream through a verifying
  ``BlobWriter`` and read as streams, from any offset. An object store would upload the
  writer's stream in parts and complete the object only once the digest checks, and read
  with ``Range``; a file store can offer a local file to send with sendfile (``LocalFile``).
- ``ManifestStore``: manifest bytes by digest, byte-identical, with their media type.
- ``TagIndex``: (upstream, repository, tag, accepted types) -> digest, with when the
  upstream last confirmed it.
- ``UsageRecords``: for every cached blob and manifest, which (upstream, repository)
  pairs reference it and when each last served it. Access control and LRU eviction
  are built on these records.
- ``Index.generation``: a counter other processes bump when they change which blobs and
  manifests the cache holds, so that a running server knows to look at the stores again.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from proxy.model import FileSpan, Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest, Hasher

# A usage record's key: the content, and the repository that referenced it.
UseKey = tuple[Kind, Digest, RepoRef]


class DigestMismatch(Exception):
    """Bytes written for a digest hash to something else; nothing was stored."""

    def __init__(self, expected: Digest, actual: str, size: int) -> None:
        super().__init__(f"expected {expected}, got {actual} over {size} bytes")
        self.expected = expected
        self.actual = actual
        self.size = size


class IndexUnavailable(Exception):
    """A shared index's server could not be reached or failed: an outage to ride out, as a
    full disk is, rather than a bug."""


class StoreUnavailable(Exception):
    """A shared blob store could not be reached or failed: the cache serves from the
    upstream without caching, as it does past a full disk."""


# What an index raises when its storage fails rather than the code: the disk index's SQLite
# and file errors, a shared index's IndexUnavailable.
INDEX_FAILURES: tuple[type[Exception], ...] = (OSError, sqlite3.Error, IndexUnavailable)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    size: int
    modified: float  # unix time it was stored; eviction's last use for a blob without records


class BlobReader(ABC):
    """A blob open for reading: a stored one, or what a writer has written so far."""

    @abstractmethod
    def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[offset, end)``, in pieces. Of a blob being written, only bytes the
        writer has counted in ``written`` may be asked for."""

    @abstractmethod
    async def close(self) -> None: ...


class StoredBlob(BlobReader):
    """A stored blob, open: ``size`` is its length; ``data`` all of it, where the store read
    it whole when opening it (a small blob), else None."""

    size: int
    data: bytes | None = None


@runtime_checkable
class Presigning(Protocol):
    """A store whose blobs a client may fetch itself, without credentials, for a while: what
    ``storage.s3.redirect`` sends clients to."""

    async def presigned_url(self, digest: Digest, expires: int) -> str: ...


class LocalFile(ABC):
    """What a reader offers when its bytes are in a local file: spans of it, which the
    server sends with the kernel's sendfile instead of reading them into memory. Optional;
    callers check for it with isinstance, and read bytes otherwise."""

    @abstractmethod
    def span(self, offset: int, count: int) -> FileSpan:
        """``count`` bytes from ``offset``; they must be readable, as for ``read``."""


async def pieces(
    reader: BlobReader, offset: int, end: int
) -> AsyncGenerator[bytes | FileSpan, None]:
    """Bytes ``[offset, end)`` of the reader as pieces to send: one span of its local file
    when it has one, its bytes otherwise."""
    if offset >= end:
        return
    if isinstance(reader, LocalFile):
        yield reader.span(offset, end - offset)
    else:
        async for chunk in reader.read(offset, end):
            yield chunk


class BlobWriter(ABC):
    """A blob being written. Readers may follow it while it grows (``reader``).

    ``commit`` verifies the digest and makes the blob visible atomically; until then no
    reader of the store can see it.
    """

    written: int

    @abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    async def verify(self) -> bool:
        """Check the digest of what was written, before ``commit``, where that is quicker
        than committing: True when checked. Raises DigestMismatch, after discarding the
        bytes. False leaves the check to ``commit``."""
        return False

    @abstractmethod
    async def commit(self) -> None:
        """Raises DigestMismatch, after discarding the bytes."""

    async def begin(self) -> None:
        """Make what is written followable from the first byte on (the file store creates
        its file here); a blob given whole (``write_whole``) needs no beginning."""
        return None

    async def write_whole(self, data: bytes) -> None:
        """``write`` the rest of the blob, then ``commit``: in one go where the store can. A
        write that fails leaves ``written`` as it was."""
        await self.write(data)
        await self.commit()

    @abstractmethod
    async def abort(self) -> None: ...

    @abstractmethod
    async def detach(self) -> Hasher:
        """Stop writing (the disk is full) and hand over the running hash.

        The bytes written so far stay readable until ``abort``; ``commit`` is no longer
        allowed. The hash covers every byte given to ``write``, stored or not.
        """

    @abstractmethod
    async def reader(self) -> BlobReader | None:
        """The bytes written so far, and the later ones as ``written`` grows; once committed,
        the stored blob. None when there is nothing left to read (aborted).

        Downloads are followed through this; an object store, whose upload parts cannot be
        read before the object is complete, keeps the bytes for its followers elsewhere
        meanwhile (a local spool, say).
        """


class BlobStore(ABC):
    @abstractmethod
    async def stat(self, digest: Digest) -> BlobInfo | None:
        """The stored blob's size and time, or None when it is not stored."""

    async def size(self, digest: Digest) -> int | None:
        """The stored blob's size, or None when it is not stored."""
        info = await self.stat(digest)
        return None if info is None else info.size

    @abstractmethod
    async def reader(self, digest: Digest) -> StoredBlob | None:
        """The stored blob, open, or None when it is not stored."""

    @abstractmethod
    async def writer(self, digest: Digest) -> BlobWriter: ...

    # Whether other processes' writes land here too (a bucket several replicas share): a
    # blob another replica is storing need not be stored again by this one.
    shared: bool = False

    async def follower_writer(self, digest: Digest) -> BlobWriter:
        """A writer for a blob another replica is downloading and storing, whose bytes this
        replica follows: it verifies them and offers them to this replica's readers as
        ``writer``'s do. A shared store does not store them a second time (its ``commit``
        verifies and keeps them readable, and what it keeps locally is its own affair); a
        store of this replica's own stores them as ``writer`` does."""
        return await self.writer(digest)

    @abstractmethod
    async def delete(self, digest: Digest) -> bool: ...

    @abstractmethod
    async def total_size(self) -> int: ...

    # Blobs this process stored or deleted: whether a command must tell a running server
    # (proxy.server.cacheparts). Each store counts on its instance.
    changes: int = 0

    @abstractmethod
    async def remeasure(self) -> None:
        """Count ``total_size`` afresh, after other processes stored or deleted blobs. A store
        whose ``total_size`` asks its backend each time has nothing to do."""

    @abstractmethod
    def digests(self) -> AsyncIterator[Digest]: ...

    async def check(self) -> None:
        """Raise StoreUnavailable when a shared store is out of reach (for ``/readyz``); a
        local one has no server to lose."""
        return None


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

    async def put_tags(self, entries: Sequence[tuple[TagKey, TagEntry]]) -> None:
        """``put_tag`` of each; a backend may write them at once."""
        for key, entry in entries:
            await self.put_tag(key, entry)

    @abstractmethod
    async def delete_tag(self, key: TagKey) -> None: ...

    @abstractmethod
    def tags(self) -> AsyncIterator[tuple[TagKey, TagEntry]]:
        """Every tag entry, each Accept list's separately; order unspecified."""


class PinRecords(ABC):
    """Images kept out of eviction (``regcache warm --pin``) until unpinned: by name (the
    full image reference), with every manifest and blob digest the image needs."""

    @abstractmethod
    async def put_pin(self, name: str, contents: frozenset[Digest]) -> None: ...

    @abstractmethod
    async def delete_pin(self, name: str) -> bool: ...

    @abstractmethod
    async def pins(self) -> dict[str, frozenset[Digest]]: ...


class UsageRecords(ABC):
    @abstractmethod
    async def record_use(self, kind: Kind, digest: Digest, ref: RepoRef, when: float) -> None:
        """Remember that ``ref`` references the content and served it at ``when``."""

    async def record_uses(self, uses: Mapping[UseKey, float]) -> None:
        """``record_use`` of each; a backend may write them at once."""
        for (kind, digest, ref), when in uses.items():
            await self.record_use(kind, digest, ref, when)

    @abstractmethod
    async def references(self, kind: Kind, digest: Digest) -> dict[RepoRef, float]:
        """Every (upstream, repository) that referenced the content, with its last use."""

    @abstractmethod
    async def forget(self, kind: Kind, digest: Digest) -> None: ...


class Index(ManifestStore, TagIndex, UsageRecords, PinRecords, ABC):
    """The metadata half of the cache; one backend usually holds all of it."""

    @abstractmethod
    async def generation(self) -> int:
        """The change counter; 0 until first bumped. Cheap: a server reads it on each pass."""

    @abstractmethod
    async def bump_generation(self) -> int:
        """Add one to the counter, atomically across every process sharing the index; the new
        value."""

    @abstractmethod
    async def close(self) -> None: ...

    async def put_manifest_tagged(
        self, manifest: StoredManifest, tags: Sequence[tuple[TagKey, TagEntry]]
    ) -> None:
        """``put_manifest``, then ``put_tags``; a backend may write them at once."""
        await self.put_manifest(manifest)
        await self.put_tags(tags)

    async def check(self) -> None:
        """Raise IndexUnavailable when a shared index is out of reach (for ``/readyz``); a
        local one has no server to lose."""
        return None
