"""Files of the local disk as blobs go through them: one being written, which readers follow
while it grows (a ``Spool``), and one open for reading (``FsFileReader``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from io import FileIO
from pathlib import Path
from typing import BinaryIO

import aiofiles.os

from proxy.model import FileSpan
from proxy.store import BlobReader, LocalFile

READ_CHUNK = 256 * 1024
# Closes not waited for; held here so that they are not collected half-way.
_closing: set[asyncio.Future[None]] = set()


class FsFileReader(BlobReader, LocalFile):
    """An open file of the store: spans of it for sendfile, or its bytes."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def span(self, offset: int, count: int) -> FileSpan:
        return FileSpan(self._file, offset, count)

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = self._file.fileno()
        while offset < end:
            size = min(READ_CHUNK, end - offset)
            chunk = await loop.run_in_executor(None, os.pread, fd, size, offset)
            if not chunk:
                raise EOFError(f"blob file ends at byte {offset}, before {end}")
            offset += len(chunk)
            yield chunk

    async def close(self) -> None:
        # The last close of an evicted blob frees its blocks, which takes a while for a
        # large one; the response is done by then and need not wait for it.
        closing = asyncio.get_running_loop().run_in_executor(None, self._file.close)
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


class Spool:
    """A file written chunk by chunk that readers follow while it grows: the file store's
    blob before it is renamed into place, the object store's copy for followers while
    parts go up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Unbuffered: a chunk written is in the file for its readers, with no flush to wait for.
        self._file: FileIO | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self.open_now)

    def open_now(self) -> None:
        """Blocking: run it in a thread."""
        self._file = FileIO(self.path, "wb")

    @property
    def opened(self) -> bool:
        return self._file is not None

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self.write_now, chunk)

    def write_now(self, chunk: bytes) -> None:
        """Blocking: run it in a thread."""
        assert self._file is not None, "spool not open"
        view = memoryview(chunk)
        while view:
            view = view[self._file.write(view) :]

    def sync_and_close_now(self, sync: bool = True) -> None:
        """Blocking: run it in a thread."""
        assert self._file is not None, "spool not open"
        try:
            if sync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()

    async def close(self) -> None:
        """Stop writing; what was written stays readable until ``discard``."""
        if self._file is not None and not self._file.closed:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._file.close)

    def open_reader(self) -> FsFileReader | None:
        """Blocking: run it in a thread. None once discarded."""
        try:
            return FsFileReader(open(self.path, "rb", buffering=0))
        except FileNotFoundError:
            return None

    async def discard(self) -> None:
        await self.close()
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self.path)


def clear_directory(directory: Path) -> None:
    """Blocking: remove what interrupted writes left in a spool directory."""
    for leftover in directory.iterdir():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
