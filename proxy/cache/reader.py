"""A blob opened for one response: cached or still downloading, read the same way.

The response asks for the bytes from an offset and gets pieces to send: spans of a local
file for sendfile where the store has one, bytes otherwise. A blob still downloading is
followed as it grows (see downloads.py); one without a length is waited for whole, as
without a length there is no last byte to hold back until the digest checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator

from proxy.cache.downloads import Download, Downloads
from proxy.errors import UpstreamUnavailable
from proxy.model import FileSpan
from proxy.oci.digest import Digest
from proxy.routing import Target
from proxy.store import BlobStore, StoredBlob, pieces

Pieces = AsyncGenerator[bytes | FileSpan, None]


class OpenBlob(ABC):
    """One response's hold on a blob: its size, its bytes, and where they come from.

    ``source`` labels the bytes in ``regcache_served_bytes_total``: "cache" when they are
    read from the store, "upstream" when they are followed as they arrive.
    """

    def __init__(self, digest: Digest, size: int, hit: bool, source: str) -> None:
        self.digest = digest
        self.size = size
        self.hit = hit  # in the cache when it was asked for
        self.source = source
        self._reading: Pieces | None = None

    @property
    def data(self) -> bytes | None:
        """All of the blob where it is in memory already (a small cached one), else None."""
        return None

    def pieces(self, start: int, end: int) -> Pieces:
        """Bytes ``[start, end)``, once per opening."""
        assert self._reading is None, "an open blob is read once"
        self._reading = self._pieces(start, end)
        return self._reading

    async def close(self) -> None:
        if self._reading is not None:
            # Now rather than when the generator is collected: a follower still counted by
            # its download holds back the in-memory tail of a full disk.
            await self._reading.aclose()

    @abstractmethod
    def _pieces(self, start: int, end: int) -> Pieces: ...


class _Stored(OpenBlob):
    def __init__(self, digest: Digest, blob: StoredBlob, hit: bool) -> None:
        super().__init__(digest, blob.size, hit, "cache")
        self._blob = blob

    @property
    def data(self) -> bytes | None:
        return self._blob.data

    def _pieces(self, start: int, end: int) -> Pieces:
        # All of it in one piece where it is one span: one sendfile call, as for a file.
        return pieces(self._blob, start, end)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._blob.close()


class _Following(OpenBlob):
    def __init__(self, download: Download, size: int) -> None:
        super().__init__(download.digest, size, False, "upstream")
        self._download = download

    def _pieces(self, start: int, end: int) -> Pieces:
        return self._download.follow(start, end)


def stored_blob(digest: Digest, stored: StoredBlob) -> OpenBlob:
    """A blob found in the store, for one response."""
    return _Stored(digest, stored, hit=True)


async def follow_download(
    store: BlobStore, downloads: Downloads, target: Target, digest: Digest
) -> OpenBlob:
    """The download under way to follow, joined or started for ``target``. Raises the
    upstream's error."""
    download = await downloads.join(target, digest)
    if download.size is not None:
        return _Following(download, download.size)
    # No length to hold the last byte back against: wait for the verified blob.
    await download.wait_done()
    stored = await store.reader(digest)
    if stored is None:
        raise UpstreamUnavailable("the blob is neither downloading nor cached")
    return _Stored(digest, stored, hit=False)
