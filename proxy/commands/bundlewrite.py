"""Writing a bundle: the images' manifests and blobs, straight from the cache into an OCI
layout tar archive, one chunk at a time. The archive appears under its name only once whole
(written beside it and renamed), so a failed export leaves no half bundle."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiofiles

from proxy.cache.closure import Closure
from proxy.commands.inventory import Inventory
from proxy.commands.progress import Item, Reporter
from proxy.commands.tarstream import TarWriter
from proxy.commands.transfers import Transfer
from proxy.oci.digest import Digest
from proxy.oci.layout import (
    INDEX_FILE,
    LAYOUT_FILE,
    LayoutImage,
    blob_path,
    index_document,
    layout_document,
)
from proxy.store import BlobStore


class ExportError(Exception):
    """An image cannot be exported; the message names it and why."""


@dataclass(frozen=True)
class Planned:
    """An image to export: its full name and everything it needs, all of it in the cache."""

    name: str
    closure: Closure

    def descriptor(self) -> LayoutImage:
        root = self.closure.manifests[0]
        return LayoutImage(root.digest, root.media_type, len(root.body), self.name)


class BundleWriter:
    def __init__(
        self, store: BlobStore, have: Inventory | None, progress: Reporter, transfer: Transfer
    ) -> None:
        self._store = store
        self._have = have
        self._progress = progress
        self._transfer = transfer
        self._written: set[Digest] = set()

    async def write(self, path: Path, images: list[Planned]) -> None:
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            async with aiofiles.open(partial, "wb") as file:
                tar = TarWriter(file)
                await tar.add_bytes(LAYOUT_FILE, layout_document())
                for image in images:
                    await self._image(tar, image)
                # Last: a reader that finds index.json has read every entry it lists.
                index = index_document([(image.name, image.descriptor()) for image in images])
                await tar.add_bytes(INDEX_FILE, index)
                await tar.close()
                await file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    async def _image(self, tar: TarWriter, image: Planned) -> None:
        closure = image.closure
        wanted = {d for d in closure.digests() if d not in self._written}
        carried = {d for d in wanted if self._have is None or not self._have.has(d)}
        sizes = {m.digest: len(m.body) for m in closure.manifests} | closure.blobs
        item = self._progress.item(image.name, sum(sizes[d] for d in carried))
        try:
            for digest, size in closure.blobs.items():
                if digest in carried:
                    await tar.add(blob_path(digest), size, self._blob(digest, size, item))
            # Children before the index that lists them, as registries want them pushed.
            for manifest in reversed(closure.manifests):
                if manifest.digest in carried:
                    await tar.add_bytes(blob_path(manifest.digest), manifest.body)
                    item.advance(len(manifest.body))
        except BaseException as exc:
            item.fail(str(exc) or type(exc).__name__)
            raise
        self._count(closure, wanted, carried, sizes)
        skipped = len(wanted) - len(carried)
        item.finish(f"{len(carried)} written, {skipped} on the far side" if self._have else "")

    def _count(
        self, closure: Closure, wanted: set[Digest], carried: set[Digest], sizes: dict[Digest, int]
    ) -> None:
        self._transfer.images += 1
        self._transfer.blobs += sum(1 for d in carried if d in closure.blobs)
        self._transfer.manifests += sum(1 for d in carried if d not in closure.blobs)
        self._transfer.written += sum(sizes[d] for d in carried)
        self._transfer.skipped += sum(sizes[d] for d in wanted if d not in carried)
        self._written.update(wanted)

    async def _blob(self, digest: Digest, size: int, item: Item) -> AsyncIterator[bytes]:
        stored = await self._store.reader(digest)
        if stored is None:
            raise ExportError(f"blob {digest} left the cache during the export (evicted?)")
        try:
            async for chunk in stored.read(0, size):
                item.advance(len(chunk))
                yield chunk
        finally:
            await stored.close()
