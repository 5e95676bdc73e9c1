"""Reading a bundle into the cache as it streams by: every blob through the store's verifying
writer, every manifest checked against its digest and held until its image is known whole.

Nothing of a rejected bundle stays: the blobs this reading added are removed again, unless
something else (a server pulling the same layer meanwhile) has come to reference them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from proxy.commands.progress import Reporter
from proxy.commands.tarstream import TarEntry, TarError, TarReader
from proxy.commands.transfers import Transfer
from proxy.model import Kind, StoredManifest
from proxy.oci.digest import Digest
from proxy.oci.layout import (
    INDEX_FILE,
    LAYOUT_FILE,
    MAX_INDEX_BYTES,
    InvalidLayout,
    LayoutImage,
    blob_digest,
    parse_index,
)
from proxy.oci.mediatypes import MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST
from proxy.store import BlobStore, DigestMismatch, Index


class BadEntry(Exception):
    """The bundle cannot be imported; the message names the entry and what is wrong."""


@dataclass
class ReadBundle:
    images: list[LayoutImage]
    manifests: dict[Digest, StoredManifest] = field(default_factory=dict)


class BundleReader:
    def __init__(
        self, store: BlobStore, index: Index, progress: Reporter, transfer: Transfer
    ) -> None:
        self._store = store
        self._index = index
        self._progress = progress
        self._transfer = transfer
        self._manifests: dict[Digest, StoredManifest] = {}
        self._added: list[Digest] = []

    async def read(self, path: Path) -> ReadBundle:
        """Raises BadEntry, with what this reading stored removed again."""
        try:
            index = await self._entries(path)
            return ReadBundle(parse_index(index), self._manifests)
        except InvalidLayout as exc:
            await self._roll_back()
            raise BadEntry(str(exc)) from None
        except BaseException:
            await self._roll_back()
            raise

    async def _entries(self, path: Path) -> bytes:
        index: bytes | None = None
        try:
            async with TarReader(path) as tar:
                async for entry in tar.entries():
                    try:
                        if entry.name == INDEX_FILE:
                            index = await _small(entry, MAX_INDEX_BYTES)
                        elif entry.name == LAYOUT_FILE:
                            _check_layout(await _small(entry, 64 * 1024))
                        elif (digest := blob_digest(entry.name)) is not None:
                            await self._blob(entry, digest)
                    except (TarError, DigestMismatch, InvalidLayout, OSError) as exc:
                        raise BadEntry(f"{entry.name}: {exc}") from None
        except (TarError, OSError) as exc:
            raise BadEntry(f"{path}: {exc}") from None
        if index is None:
            raise BadEntry(f"{path}: no {INDEX_FILE}: not an OCI image layout, or cut short")
        return index

    async def _blob(self, entry: TarEntry, digest: Digest) -> None:
        chunks = entry.chunks()
        first = await anext(chunks, b"")
        if entry.size <= MAX_MANIFEST_BYTES and first.lstrip()[:1] == b"{":
            # JSON, small: a manifest, or a config; which one, the images tell later.
            await self._document(digest, first + b"".join([c async for c in chunks]))
        elif await self._store.size(digest) is not None:
            # Stored blobs were verified once; the archive skips to the next entry.
            self._transfer.skipped += entry.size
        else:
            await self._write(entry, digest, first, chunks)

    async def _document(self, digest: Digest, body: bytes) -> None:
        actual = Digest.of(body, digest.algorithm)
        if actual != digest:
            raise DigestMismatch(digest, str(actual), len(body))
        if _is_manifest(body):
            self._manifests[digest] = StoredManifest(digest, _media_type(body), body)
        else:
            await self.store_bytes(digest, body)

    async def store_bytes(self, digest: Digest, body: bytes) -> None:
        """A small blob, verified already (or checked by the writer)."""
        if await self._store.size(digest) is not None:
            self._transfer.skipped += len(body)
            return
        item = self._progress.item(f"blob {digest}", len(body))
        writer = await self._store.writer(digest)
        try:
            await writer.write(body)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        self._stored(digest, len(body))
        item.advance(len(body))
        item.finish()

    async def _write(
        self, entry: TarEntry, digest: Digest, first: bytes, rest: AsyncIterator[bytes]
    ) -> None:
        item = self._progress.item(f"blob {digest}", entry.size)
        writer = await self._store.writer(digest)
        try:
            chunk = first
            while chunk:
                await writer.write(chunk)
                item.advance(len(chunk))
                chunk = await anext(rest, b"")
            await writer.commit()
        except BaseException as exc:
            await writer.abort()
            item.fail(str(exc) or type(exc).__name__)
            raise
        self._stored(digest, entry.size)
        item.finish()

    def _stored(self, digest: Digest, size: int) -> None:
        self._added.append(digest)
        self._transfer.blobs += 1
        self._transfer.written += size

    async def _roll_back(self) -> None:
        for digest in self._added:
            if not await self._index.references(Kind.BLOB, digest):
                await self._store.delete(digest)
        self._added.clear()


async def _small(entry: TarEntry, limit: int) -> bytes:
    if entry.size > limit:
        raise InvalidLayout(f"{entry.size} bytes, more than the {limit} allowed")
    return await entry.read()


def _check_layout(body: bytes) -> None:
    try:
        version = json.loads(body).get("imageLayoutVersion")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str) or not version.startswith("1."):
        raise InvalidLayout(f"imageLayoutVersion {version!r}; regcache reads 1.x")


def _is_manifest(body: bytes) -> bool:
    """A manifest or an index, rather than a config or some other small blob: it says which
    schema it follows (configs do not)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and "schemaVersion" in document


def _media_type(body: bytes) -> str:
    document = json.loads(body)
    media_type = document.get("mediaType")
    if isinstance(media_type, str):
        return media_type
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST
