"""Progress of long commands (warm, export, import): live bars per item and in total on a
terminal (``rich``), and plain lines otherwise, one as each item starts and ends, so that CI
logs and pipes stay readable."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from proxy.config.parsers import human_size

if TYPE_CHECKING:
    # rich is imported when a reporter is made (see proxy.commands.output).
    from rich.progress import Progress, TaskID


class Item:
    """One image, or one bundle entry: bytes as they move, then done or failed."""

    def __init__(self, reporter: Reporter, name: str, total: int | None) -> None:
        self.name = name
        self.bytes = 0
        self._reporter = reporter
        self._started = time.monotonic()
        self._task = reporter._add(name, total)

    def advance(self, count: int) -> None:
        self.bytes += count
        self._reporter._advance(self._task, count)

    def grow(self, total: int) -> None:
        """The item turned out bigger: a manifest named more blobs than known at the start."""
        self._reporter._grow(self._task, total)

    def finish(self, note: str = "") -> None:
        elapsed = time.monotonic() - self._started
        rate = f"{human_size(int(self.bytes / elapsed))}/s" if elapsed > 0 else "-"
        summary = f"{human_size(self.bytes)} in {elapsed:.1f} s ({rate})"
        self._reporter._done(
            self._task, f"{self.name}: done, {summary}" + (f"; {note}" if note else "")
        )

    def fail(self, reason: str) -> None:
        self._reporter._done(self._task, f"{self.name}: FAILED: {reason}")


class Reporter:
    """``with Reporter("warm") as progress: item = progress.item(name, total)``."""

    def __init__(self, verb: str, stream: TextIO | None = None, live: bool | None = None) -> None:
        from rich.console import Console

        self.verb = verb
        self._console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self._live = self._console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        # Kept here: rich's task list shifts as finished items are removed from the display.
        self._totals: dict[TaskID | None, int] = {None: 0}

    def __enter__(self) -> Reporter:
        if self._live:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._progress.start()
            self._overall = self._progress.add_task(f"[bold]{self.verb}: total", total=0)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def item(self, name: str, total: int | None = None) -> Item:
        return Item(self, name, total)

    def note(self, line: str) -> None:
        self._console.print(line, markup=False)

    def _add(self, name: str, total: int | None) -> TaskID | None:
        if self._progress is None:
            self.note(f"{self.verb} {name}: started")
            return None
        task = self._progress.add_task(name, total=total)
        self._grow(task, total or 0)
        return task

    def _advance(self, task: TaskID | None, count: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, count)
            assert self._overall is not None
            self._progress.advance(self._overall, count)

    def _grow(self, task: TaskID | None, total: int) -> None:
        if self._progress is None:
            return
        added = total - self._totals.get(task, 0) if task is not None else total
        if task is not None:
            self._totals[task] = total
            self._progress.update(task, total=total)
        self._totals[None] += added
        assert self._overall is not None
        self._progress.update(self._overall, total=self._totals[None])

    def _done(self, task: TaskID | None, line: str) -> None:
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)
        self.note(f"{self.verb} {line}")
