"""Per-process figures from /proc: resident memory (peak and now), CPU time, open files.

Resident memory comes two ways. RSS (``VmRSS``) counts every page a process maps, so summed
over a supervisor and the workers it forked it counts the pages they still share (the
interpreter, the imported modules, the page cache of a mapped index) once per process. PSS
(``Pss`` in ``smaps_rollup``) divides each page among the processes mapping it, so the sum
over a group is what the group really holds. Both are reported, side by side."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path


def peak_rss(pid: int) -> int | None:
    """VmHWM of ``pid`` in bytes: the most it has held resident since start or the last reset."""
    return _status_bytes(pid, "VmHWM:")


def rss(pid: int) -> int | None:
    """VmRSS of ``pid`` in bytes: what it holds resident now."""
    return _status_bytes(pid, "VmRSS:")


def total_rss(pids: Iterable[int]) -> int | None:
    """Sum of the processes' VmRSS now, in bytes."""
    return _total(rss, pids)


def status_bytes(pid: int, field: str) -> int | None:
    """A size from ``/proc/<pid>/status`` in bytes: ``VmRSS``, ``RssAnon`` (heap),
    ``RssFile`` (mapped files: libraries, SQLite's memory map)."""
    return _status_bytes(pid, f"{field}:")


def pss(pid: int) -> int | None:
    """``pid``'s proportional share of resident memory now, in bytes: each page it shares
    with N processes counts 1/N. None where the kernel has no ``smaps_rollup`` (before 4.14)
    or refuses it."""
    return _kb_field(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")


def total_pss(pids: Iterable[int]) -> int | None:
    """Sum of the processes' PSS now, in bytes: what the group holds, shared pages once."""
    return _total(pss, pids)


def _total(measure: Callable[[int], int | None], pids: Iterable[int]) -> int | None:
    known = [m for m in (measure(pid) for pid in pids) if m is not None]
    return sum(known) if known else None


def _status_bytes(pid: int, field: str) -> int | None:
    return _kb_field(Path(f"/proc/{pid}/status"), field)


def _kb_field(path: Path, field: str) -> int | None:
    """The line of ``path`` starting ``field``, its "N kB" in bytes."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
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


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, by parent, from /proc."""
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
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a server's worker processes), from /proc."""
    children = children_by_parent()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def command_line(pid: int) -> str | None:
    """The process's command line, its arguments joined by spaces; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


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
