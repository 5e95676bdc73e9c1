"""A digest's lock among the workers of one server: who owns its download, and where the
owner's growing file is (localdownloads.py).

All digests share one file, never removed: a lock file per digest cost the creation and the
removal of an inode per cold blob, which on a well-filled filesystem was about a twentieth of
a cold pull's CPU. A digest's lock is an open file description lock (``F_OFD_SETLK``) on one
byte of it, at an offset taken from the digest, so that no two digests' locks meet. What its
owner publishes goes in a slot of the file, also chosen by the digest; slots are fewer, and
two downloads whose slots meet overwrite each other's publication: a publication names its
digest, and one naming another is as none, so that the other's followers wait for the blob
to be stored instead of following its file. Followers of one digest, and a dead owner's
successor, find a publication as they did a lock file's, which a clear removes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from proxy.oci.digest import Digest

LOCK_FILE = Path(".locks") / "downloads.lock"
SLOT_BYTES = 512
SLOTS = 65_536  # the file is sparse: only slots written take space, 16 MiB at most
INVALID = b"invalid\n"  # in place of a file and a size: the owner's bytes failed the digest
_FREE = bytes(SLOT_BYTES)
_BUSY = frozenset({errno.EAGAIN, errno.EACCES})


def lock_offset(digest: Digest) -> int:
    """Where the digest's lock byte is: past every slot, 60 bits of the digest."""
    return SLOTS * SLOT_BYTES + int(digest.hex[:15], 16)


@dataclass(frozen=True, slots=True)
class Published:
    path: Path
    size: int | None


class LockFile:
    """A digest's lock, through an open of its own (locks of two opens conflict, in one
    process as in two); ``owned`` once its lock is this open's."""

    def __init__(self, path: Path, digest: Digest) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.owned = False
        self.empty = False  # known once owned: nothing of this digest's was published
        self._offset = lock_offset(digest)
        self._slot = int(digest.hex[15:19], 16) * SLOT_BYTES
        self._name = f"{digest}\n".encode()

    def try_own(self) -> bool:
        """Take the lock if free."""
        request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, self._offset, 1, 0)
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, request)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        self.owned = True
        self.empty = not self._slot_text().startswith(self._name)
        return True

    def _slot_text(self) -> bytes:
        return os.pread(self.fd, SLOT_BYTES, self._slot)

    def _published_text(self) -> bytes | None:
        """What the slot holds for this digest, without its name; None when nothing."""
        text = self._slot_text().rstrip(b"\0")
        if not text.startswith(self._name):
            return None
        return text[len(self._name) :]

    def published(self) -> Published | None:
        text = self._published_text()
        if text is None:
            return None
        path, newline, size = text.decode(errors="replace").partition("\n")
        if not (path and newline):
            return None
        return Published(Path(path), int(size) if size.strip().isdigit() else None)

    def publish(self, path: Path, size: int | None) -> None:
        self._write(f"{path}\n{'' if size is None else size}\n".encode())

    def mark_invalid(self) -> None:
        """As an owner whose upstream sent bytes that failed the digest: followers that sent
        some of them to clients must fail as its own clients do, not go on from them."""
        self._write(INVALID)

    def invalid(self) -> bool:
        return self._published_text() == INVALID

    def clear(self) -> None:
        """Remove this digest's publication; another digest's in the slot stays."""
        if self._published_text() is not None:
            os.pwrite(self.fd, _FREE, self._slot)

    def _write(self, text: bytes) -> None:
        data = self._name + text
        if len(data) > SLOT_BYTES:
            # A cache directory with a path this long: followers wait for the stored blob.
            data = b""
        os.pwrite(self.fd, data.ljust(SLOT_BYTES, b"\0"), self._slot)

    def close(self, stored: bool) -> None:
        """Let go (closing the open drops its lock); with the blob ``stored``, clear the
        publication first, so that nothing is left behind per blob."""
        if stored and self.owned:
            self.clear()
        os.close(self.fd)
