"""Parsing ``WWW-Authenticate`` challenges (RFC 7235), pure code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SEPARATORS = re.compile(r"[\s,]*")
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge in the header; registries send one. None if unparseable."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while True:
        # RFC 9110 5.6.1: empty list elements ("a=1, , b=2") are to be ignored.
        position = _SEPARATORS.match(rest, position).end()  # type: ignore[union-attr]
        if position >= len(rest):
            break
        match = _PARAM.match(rest, position)
        if not match or match.end() == position:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return Challenge(scheme.lower(), params)
