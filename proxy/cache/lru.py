"""What may not be evicted now: content this process is serving or downloading.

The order itself is kept beside the index (proxy.store.diskorder, proxy.store.redisorder).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from proxy.model import Kind
from proxy.oci.digest import Digest

Key = tuple[Kind, Digest]


class Pins:
    """Content a response or a download is using right now; eviction passes it over."""

    def __init__(self) -> None:
        self._counts: Counter[Key] = Counter()

    def __contains__(self, key: Key) -> bool:
        return self._counts[key] > 0

    def acquire(self, key: Key) -> None:
        self._counts[key] += 1

    def release(self, key: Key) -> None:
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]

    @contextlib.contextmanager
    def hold(self, key: Key) -> Iterator[None]:
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)
