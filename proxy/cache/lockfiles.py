"""A digest's lock file among the workers of one server: who owns its download, and where
the owner's growing file is (localdownloads.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

INVALID = b"\ninvalid\n"  # a publication naming no file


@dataclass(frozen=True, slots=True)
class Published:
    path: Path
    size: int | None


class LockFile:
    """A digest's lock file, open; ``owned`` once its exclusive flock is this file's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.owned = False
        self.empty = False  # known once owned: nothing was ever published in it

    def try_own(self) -> bool:
        """Take the lock if free. A lock file removed by an owner that stored the blob may be
        locked through an old open: only the file at ``path`` counts."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        opened = os.fstat(self.fd)
        if current != opened.st_ino:
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            return self.try_own()
        self.owned = True
        self.empty = opened.st_size == 0
        return True

    def published(self) -> Published | None:
        text = os.pread(self.fd, 4096, 0).decode(errors="replace")
        path, newline, size = text.partition("\n")
        if not (path and newline):
            return None
        return Published(Path(path), int(size) if size.strip().isdigit() else None)

    def publish(self, path: Path, size: int | None) -> None:
        data = f"{path}\n{'' if size is None else size}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def mark_invalid(self) -> None:
        """As an owner whose upstream sent bytes that failed the digest: followers that sent
        some of them to clients must fail as its own clients do, not go on from them."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, INVALID, 0)

    def invalid(self) -> bool:
        return os.pread(self.fd, len(INVALID), 0) == INVALID

    def clear(self) -> None:
        os.ftruncate(self.fd, 0)

    def close(self, stored: bool) -> None:
        """Let go; with the blob ``stored``, remove the lock file first, so that none is
        left behind per blob."""
        if stored and self.owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
