"""Optional py-spy sampling of regcache during a scenario (``python -m bench --profile``).

py-spy samples only the thread holding the GIL (``--gil``): regcache's file and disk work runs
on thread-pool threads whose idle waits would otherwise swamp the picture, so the shares
below are shares of the time some thread of regcache was running Python code. The CPU
columns of the results table say how busy the process was overall.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.regcache import REPO_ROOT

# "function (path/to/file.py:123)" -> function and file, without the line number, so one
# function's samples from different lines add up.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass(frozen=True)
class Hotspot:
    function: str
    share: float  # of all samples, 0..1


@dataclass(frozen=True)
class ProfileSummary:
    phase: str
    samples: int
    raw_path: str
    self_time: tuple[Hotspot, ...]  # where the sample's innermost frame was
    inclusive: tuple[Hotspot, ...]  # the function was anywhere on the stack


def py_spy() -> str:
    path = shutil.which("py-spy")
    if path is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return path


@contextlib.asynccontextmanager
async def sampled(pid: int | None, out: Path, results: list[ProfileSummary]) -> AsyncIterator[None]:
    """Record ``pid`` with py-spy for the duration of the block; no-op for pid None."""
    if pid is None:
        yield
        return
    _make_parent(out)
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    argv += ["--output", str(out), "--gil"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    # py-spy needs a moment to attach; samples before that are lost, not wrong.
    await asyncio.sleep(0.5)
    try:
        yield
    finally:
        if proc.returncode is None:
            # SIGINT is py-spy's "stop and write the file".
            proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    _collect(out, results)


def _collect(out: Path, results: list[ProfileSummary]) -> None:
    if out.exists():
        results.append(summarize(out.stem, out))


def _make_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def summarize(phase: str, raw: Path, top: int = 15) -> ProfileSummary:
    self_counts: Counter[str] = Counter()
    inclusive_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            inclusive_counts[name] += count
    return ProfileSummary(
        phase=phase,
        samples=total,
        raw_path=str(raw),
        self_time=_top(self_counts, total, top),
        inclusive=_top(inclusive_counts, total, top),
    )


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    file = m["file"]
    # Trim site-packages and the checkout's path to what identifies the module.
    for marker in ("site-packages/", "/lib/python3", f"{REPO_ROOT}/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file})"


def _top(counts: Counter[str], total: int, n: int) -> tuple[Hotspot, ...]:
    if total == 0:
        return ()
    return tuple(Hotspot(name, count / total) for name, count in counts.most_common(n))
