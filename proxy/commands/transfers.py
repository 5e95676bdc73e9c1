"""The summary export and import end with: what moved, what was already there, how fast."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.commands.output import emit
from proxy.config.parsers import human_size

COLUMNS = ("images", "failed", "manifests", "blobs", "written", "skipped", "seconds", "rate")


@dataclass
class Transfer:
    """Counts of one run: ``written``/``skipped`` in bytes (``skipped``: already on the far
    side for export, already in the cache for import)."""

    images: int = 0
    failed: int = 0
    manifests: int = 0
    blobs: int = 0
    written: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    def emit(self, title: str, *, as_json: bool) -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        rate = self.written / seconds
        row: dict[str, object] = {
            "images": self.images,
            "failed": self.failed,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "seconds": round(seconds, 2),
        }
        if as_json:
            row |= {"written": self.written, "skipped": self.skipped, "rate": int(rate)}
        else:
            row |= {
                "written": human_size(self.written),
                "skipped": human_size(self.skipped),
                "rate": f"{human_size(int(rate))}/s",
            }
        emit([row], COLUMNS, as_json=as_json, title=title)
