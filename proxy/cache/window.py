"""The latest bytes of a download, kept in memory for the readers keeping up with it.

A window holds whole chunks as they arrived, ``[start, end)`` of the blob. Its download
drops chunks from the front once they are in the file and the window is full, and after
a full disk only once the slowest reader has them (downloads.py).
"""

from __future__ import annotations

from collections import deque

from proxy.errors import UpstreamUnavailable


class Window:
    """The latest bytes received, ``[start, end)`` of the blob, while readers may need them."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.end = start
        self._chunks: deque[bytes] = deque()

    def append(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.end += len(chunk)

    def drop_before(self, offset: int) -> None:
        while self._chunks and self.start + len(self._chunks[0]) <= offset:
            self.start += len(self._chunks.popleft())

    def cut_at(self, offset: int) -> None:
        """Forget the bytes from ``offset`` on (they come again, relayed)."""
        while self._chunks and self.end > offset:
            self.end -= len(self._chunks.pop())
        self.start = min(self.start, self.end)

    def read(self, offset: int, limit: int) -> bytes:
        if offset < self.start:
            raise UpstreamUnavailable("client fell too far behind while the cache disk is full")
        position = self.start
        for chunk in self._chunks:
            if offset < position + len(chunk):
                return chunk[offset - position : limit - position]
            position += len(chunk)
        raise AssertionError("read past the tail")
