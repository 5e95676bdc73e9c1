"""Per-process figures from /proc: resident memory (peak and now), CPU time, open files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def peak_rss(pid: int) -> int | None:
    """VmHWM of ``pid`` in bytes: the most it has held resident since start or the last reset."""
    return _status_bytes(pid, "VmHWM:")


def rss(pid: int) -> int | None:
    """VmRSS of ``pid`` in bytes: what it holds resident now."""
    return _status_bytes(pid, "VmRSS:")


def total_rss(pids: Iterable[int]) -> int | None:
    """Sum of the processes' VmRSS now, in bytes."""
    known = [r for r in (rss(pid) for pid in pids) if r is not None]
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


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a server's worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in field 2 may contain spaces; the fields after ")" do not.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def open_fds(pid: int) -> int | None:
    """How many file descriptors ``pid`` has open (sockets, files, pipes)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_kinds(pid: int) -> dict[str, int]:
    """``pid``'s open descriptors by kind: socket, file, pipe, anon_inode (epoll, eventfd)."""
    kinds: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        kind = "file" if target.startswith("/") else target.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds
