"""The least-recently-served order of cached content, and what may not be evicted now.

Kept in memory and rebuilt from the stores at start: the usage records are the truth, this
is an index over them that makes each eviction O(1) instead of a scan of the cache.
"""

from __future__ import annotations

import contextlib
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from proxy.model import Kind
from proxy.oci.digest import Digest

Key = tuple[Kind, Digest]


@dataclass(slots=True)
class Entry:
    size: int
    last_served: float


class Lru:
    def __init__(self) -> None:
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self.total = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: Key, size: int, when: float) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.total -= old.size
        self._entries[key] = Entry(size, when)
        self.total += size

    def touch(self, key: Key, when: float) -> None:
        """Mark as just served; content not (yet) in the cache is ignored."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_served = max(entry.last_served, when)
            self._entries.move_to_end(key)

    def remove(self, key: Key) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.total -= entry.size
        return entry

    def oldest(self) -> Iterator[tuple[Key, Entry]]:
        """Least recently served first, lazily. No await may happen while iterating."""
        return iter(self._entries.items())

    def sort(self) -> None:
        """Order by last use; needed once after a rebuild added entries out of order."""
        ordered = sorted(self._entries.items(), key=lambda item: item[1].last_served)
        self._entries = OrderedDict(ordered)


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
