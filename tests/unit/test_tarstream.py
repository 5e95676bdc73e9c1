"""Tar archives as streams: what the writer writes, tar reads; the reader hands out an entry in
bounded chunks however large it is, and tells a cut-off archive from a whole one."""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles
import pytest

from proxy.commands.tarstream import CHUNK, TarError, TarReader, TarWriter

MIB = 1024 * 1024


async def pieces(count: int, size: int) -> AsyncIterator[bytes]:
    for n in range(count):
        yield bytes([n % 251]) * size


async def write_archive(path: Path) -> None:
    async with aiofiles.open(path, "wb") as file:
        tar = TarWriter(file)
        await tar.add_bytes("oci-layout", b"{}")
        await tar.add("blobs/sha512/" + "a" * 128, 5 * MIB + 3, pieces_of(5 * MIB + 3))
        await tar.close()


async def pieces_of(total: int) -> AsyncIterator[bytes]:
    async for piece in pieces(total // (MIB // 2), MIB // 2):
        yield piece
    yield b"end"[: total % (MIB // 2)]


async def test_the_writer_writes_what_tar_reads_and_the_reader_streams_it(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    await write_archive(path)
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["oci-layout", "blobs/sha512/" + "a" * 128]
    assert path.stat().st_size % tarfile.RECORDSIZE == 0

    sizes: list[int] = []
    async with TarReader(path) as reader:
        async for entry in reader.entries():
            async for chunk in entry.chunks():
                sizes.append(len(chunk))
    # The 5 MiB entry came in pieces no bigger than one chunk: memory holds one at a time.
    assert max(sizes) <= CHUNK
    assert sum(sizes) == 2 + 5 * MIB + 3


async def test_an_entry_shorter_than_its_header_says_is_an_error(tmp_path: Path) -> None:
    async with aiofiles.open(tmp_path / "b.tar", "wb") as file:
        with pytest.raises(OSError, match="expected 10 bytes, read 4"):
            await TarWriter(file).add("x", 10, pieces(1, 4))


@pytest.mark.parametrize("cut", [100, 512 + 1024, -tarfile.RECORDSIZE - 1])
async def test_a_cut_off_archive_is_an_error(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "a.tar"
    await write_archive(path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(TarError):
        await read_all(path)


async def read_all(path: Path) -> None:
    async with TarReader(path) as reader:
        async for entry in reader.entries():
            await entry.read()
