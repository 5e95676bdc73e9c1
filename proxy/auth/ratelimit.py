"""Failed logins per client address: after ``limit`` in ``window`` seconds, wait.

Asynchronous, as the fleet's limiter (sharedlimit.py) asks Redis; this one, in memory, is a
replica's own, and the fleet's fallback while Redis is out of reach.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Protocol

MAX_ADDRESSES = 10_000


class Limiter(Protocol):
    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""

    async def failed(self, address: str) -> None:
        """Count a failed login of ``address``."""


class FailureLimiter:
    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        seen = self._failures.get(address)
        if seen is None:
            return None
        now = time.monotonic()
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            del self._failures[address]
            return None
        if len(seen) < self.limit:
            return None
        return max(1, math.ceil(seen[0] + self.window - now))

    async def failed(self, address: str) -> None:
        now = time.monotonic()
        if address not in self._failures and len(self._failures) >= MAX_ADDRESSES:
            self._prune(now)
        seen = self._failures.setdefault(address, deque(maxlen=self.limit))
        seen.append(now)

    def _prune(self, now: float) -> None:
        stale = [
            a for a, seen in self._failures.items() if not seen or seen[-1] <= now - self.window
        ]
        for address in stale:
            del self._failures[address]
        if len(self._failures) >= MAX_ADDRESSES:
            # Spread over more addresses than this: forget the oldest half rather than grow.
            for address in list(self._failures)[: MAX_ADDRESSES // 2]:
                del self._failures[address]
