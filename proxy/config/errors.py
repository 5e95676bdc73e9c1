"""Configuration errors, and where a value came from so that its error can point there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from proxy.config.parsers import Invalid

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem, located precisely enough to fix without guessing.

    ``str(error)`` is e.g. ``config error: /etc/regcache.yaml line 7: upstreams[1].url: must be
    an http:// or https:// URL``.
    """

    def __init__(
        self, reason: str, *, source: str, line: int | None = None, key: str | None = None
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.key = key
        where = source if line is None else f"{source} line {line}"
        parts = ["config error", where, *([key] if key else []), reason]
        # Always one line: the CLI prints it as a single diagnostic and log collectors split
        # records on newlines.
        super().__init__(" ".join(": ".join(parts).splitlines()))


@dataclass(frozen=True)
class Origin:
    """Where a value came from, so that an error found later can still point at it."""

    source: str
    line: int | None = None

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=self.line, key=key)

    def check(self, key: str, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except Invalid as exc:
            raise self.error(key, str(exc)) from None


DEFAULTS = Origin("built-in defaults")
