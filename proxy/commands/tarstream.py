"""Tar archives as streams: written entry by entry from async chunks, read entry by entry in a
worker thread. Memory holds one chunk, whatever the size of the archive or of an entry."""

from __future__ import annotations

import asyncio
import os
import tarfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from types import TracebackType
from typing import IO, ParamSpec, TypeVar

from aiofiles.threadpool.binary import AsyncBufferedIOBase

CHUNK = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_P = ParamSpec("_P")
_R = TypeVar("_R")


class TarWriter:
    """An uncompressed tar archive written to an open file. PAX headers, so that any entry
    name fits; a fixed mode and time, so that the same content makes the same archive."""

    def __init__(self, file: AsyncBufferedIOBase) -> None:
        self._file = file

    async def add(self, name: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        await self._file.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        written = 0
        async for chunk in chunks:
            written += len(chunk)
            if written > size:
                break
            await self._file.write(chunk)
        if written != size:
            raise OSError(f"{name}: expected {size} bytes, read {written}")
        await self._file.write(b"\0" * (-size % _BLOCK))

    async def add_bytes(self, name: str, data: bytes) -> None:
        await self.add(name, len(data), _once(data))

    async def close(self) -> None:
        """The end-of-archive blocks, padded to a whole record as tar itself writes it."""
        end = b"\0" * (2 * _BLOCK)
        await self._file.write(end)
        position = await self._file.tell()
        await self._file.write(b"\0" * (-position % tarfile.RECORDSIZE))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class TarError(Exception):
    """The archive cannot be read on: truncated, or not a tar archive."""


class TarEntry:
    def __init__(self, reader: TarReader, member: tarfile.TarInfo) -> None:
        self.name = member.name.removeprefix("./")
        self.size = member.size
        self._reader = reader
        self._member = member

    async def chunks(self) -> AsyncIterator[bytes]:
        """The entry's bytes; only while it is the current entry, as the archive streams."""
        file = self._reader._extract(self._member)
        while True:
            chunk = await self._reader._call(file.read, CHUNK)
            if not chunk:
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class TarReader:
    """``async with TarReader(path) as tar: async for entry in tar.entries(): ...``: the
    regular files of an uncompressed tar archive, in archive order, read once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self.size = 0

    async def __aenter__(self) -> TarReader:
        self._file = await asyncio.to_thread(open, self._path, "rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self._tar = await self._call(tarfile.open, fileobj=self._file, mode="r|")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)

    @property
    def position(self) -> int:
        """How far into the archive reading has come, in bytes."""
        return self._tar.offset if self._tar is not None else 0

    async def entries(self) -> AsyncIterator[TarEntry]:
        assert self._tar is not None
        while True:
            member = await self._call(self._tar.next)
            if member is None:
                break
            if member.isfile():
                yield TarEntry(self, member)
        # tarfile takes an archive cut off between two entries for its end; the end-of-archive
        # block that should follow tells the two apart.
        if self._tar.offset + _BLOCK > self.size:
            raise TarError("the archive ends without its end-of-archive block: truncated")

    def _extract(self, member: tarfile.TarInfo) -> IO[bytes]:
        assert self._tar is not None
        file = self._tar.extractfile(member)
        assert file is not None, "a regular file"
        return file

    async def _call(self, function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (tarfile.TarError, EOFError) as exc:
            raise TarError(str(exc)) from None
