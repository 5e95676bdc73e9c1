"""How an upstream has been answering lately, for the status page."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class UpstreamHealth:
    last_status: int | None = None
    last_ok_at: float | None = None
    last_error_at: float | None = None
    last_error: str | None = None

    def answered(self, status: int) -> None:
        self.last_status = status
        # 4xx other than 429 is the upstream working as designed (a missing tag, say).
        if status >= 500 or status == 429:
            self.failed(f"HTTP {status}")
        else:
            self.last_ok_at = time.time()

    def failed(self, reason: str) -> None:
        self.last_error_at = time.time()
        self.last_error = reason

    @property
    def healthy(self) -> bool | None:
        """None until the upstream has been asked anything."""
        if self.last_ok_at is None and self.last_error_at is None:
            return None
        return (self.last_ok_at or 0) >= (self.last_error_at or 0)
