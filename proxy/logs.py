"""Logging for people (text) or for log pipelines (JSON lines, one object per record)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [worker %(worker)s]: %(message)s"
LOG_FORMATS = ("text", "json")


class _Seconds:
    """A record's time to the second, formatted once a second rather than once a record:
    under load, strftime was a good part of what an access line costs."""

    def __init__(self, pattern: str, converter: Callable[[float | None], time.struct_time]) -> None:
        self._pattern = pattern
        self._converter = converter
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._pattern, self._converter(second))
            self._second = second
        return self._text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Access records carry their fields as a dict; they become top-level keys.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        worker = getattr(record, "worker", None)
        if worker is not None:
            entry["worker"] = worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, or another, with the time formatted as logging's default does."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._seconds = _Seconds(self.default_time_format, self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"  # as logging's default


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # force=True: a library that configured the root logger at import must not win.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def mark_worker(index: int) -> None:
    """Name the worker (of ``serve --workers``) in every record this process logs: the
    workers share one stderr."""

    def marked(record: logging.LogRecord) -> bool:
        record.worker = index
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(marked)
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(TextFormatter(WORKER_TEXT_FORMAT))
