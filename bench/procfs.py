"""Per-process figures from /proc: peak resident memory (VmHWM) and CPU time."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def peak_rss(pid: int) -> int | None:
    """VmHWM of ``pid`` in bytes: the most it has held resident since start or the last reset."""
    return _status_bytes(pid, "VmHWM:")


def total_rss(pids: Iterable[int]) -> int | None:
    """Sum of the processes' VmRSS now, in bytes."""
    known = [r for r in (_status_bytes(pid, "VmRSS:") for pid in pids) if r is not None]
    return sum(known) if known else None


def _status_bytes(pid: int, field: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


def reset_peak(pids: Iterable[int]) -> bool:
    """Start a new high-water mark (``clear_refs`` 5), so a phase's peak is its own.

    Returns False where the kernel refuses, and then peaks count from the process's start.
    """
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def total_peak(pids: Iterable[int]) -> int | None:
    """Sum of the processes' peaks (nginx's workers are separate processes)."""
    peaks = [peak_rss(pid) for pid in pids]
    known = [p for p in peaks if p is not None]
    return sum(known) if known else None


def cpu_seconds(pids: Iterable[int]) -> float | None:
    """User + system CPU time of the processes (all their threads) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen = False
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the ")" that closes the command name: utime and stime are 14 and 15
        # of the whole line, so 12 and 13 here (state is 3, i.e. index 0).
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        seen = True
    return total if seen else None
