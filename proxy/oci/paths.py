"""Which endpoint of the distribution API a request path names.

Works on the raw (still percent-encoded) path: no valid name, tag or digest contains
``%``, so anything encoded is refused instead of decoded. That keeps ``%2e%2e`` and
encoded slashes from ever reaching the cache as path components.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.model import Kind
from proxy.oci.names import validate_name


class UnknownEndpoint(ValueError):
    """The path is not an endpoint of the distribution API."""


@dataclass(frozen=True, slots=True)
class V2Path:
    kind: Kind
    name: str = ""
    reference: str = ""  # tag or digest text, unparsed; empty where the endpoint has none


_PATTERNS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.MANIFEST, re.compile(r"(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    (Kind.BLOB_UPLOAD, re.compile(r"(?P<name>.+)/blobs/uploads(?:/[^/]*)?")),
    (Kind.BLOB, re.compile(r"(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
    (Kind.TAGS_LIST, re.compile(r"(?P<name>.+)/tags/list")),
)


def parse_v2_path(raw_path: str) -> V2Path:
    """Raises UnknownEndpoint, or InvalidName for a name outside the grammar."""
    if raw_path in ("/v2", "/v2/"):
        return V2Path(Kind.BASE)
    if not raw_path.startswith("/v2/"):
        raise UnknownEndpoint(raw_path)
    rest = raw_path[len("/v2/") :]
    for kind, pattern in _PATTERNS:
        match = pattern.fullmatch(rest)
        if match:
            name = validate_name(match["name"])
            return V2Path(kind, name, match.groupdict().get("ref") or "")
    raise UnknownEndpoint(raw_path)
