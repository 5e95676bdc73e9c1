"""What a manifest's descriptors say, with their sizes and platforms: what an image needs
fetched, and how much of it, before anything is fetched. Pure and tolerant as
``proxy.oci.manifest``: a descriptor that is not one is skipped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.manifest import MAX_REFERENCES


class InvalidPlatform(ValueError):
    """Not OS/ARCH[/VARIANT]; the message says so, for the person who typed it."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidPlatform(f"{text[:100]!r}: expected OS/ARCH or OS/ARCH/VARIANT")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Platform | None) -> bool:
        """Whether ``other`` (an index entry's) is this one; no variant here means any."""
        if other is None:
            return False
        same = (self.os, self.architecture) == (other.os, other.architecture)
        return same and self.variant in (None, other.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Content:
    """One descriptor: a digest, the size it claims (None when it gave none), and for an
    index entry its platform."""

    digest: Digest
    size: int | None
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class Contents:
    blobs: tuple[Content, ...] = ()  # config and layers (and an artifact's blobs)
    manifests: tuple[Content, ...] = ()  # an index's entries

    @property
    def is_index(self) -> bool:
        return bool(self.manifests)


def contents(body: bytes) -> Contents:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return Contents()
    if not isinstance(document, dict):
        return Contents()
    blobs = [document.get("config"), *_list(document.get("layers"))]
    blobs += _list(document.get("blobs"))
    found_blobs = [c for c in map(_content, blobs) if c is not None]
    schema1 = (_content(layer, "blobSum") for layer in _list(document.get("fsLayers")))
    found_blobs += [c for c in schema1 if c is not None]
    found_manifests = [c for c in map(_content, _list(document.get("manifests"))) if c is not None]
    return Contents(tuple(found_blobs[:MAX_REFERENCES]), tuple(found_manifests))


def _list(value: Any) -> list[Any]:
    return value[:MAX_REFERENCES] if isinstance(value, list) else []


def _content(descriptor: Any, field: str = "digest") -> Content | None:
    if not isinstance(descriptor, dict):
        return None
    text = descriptor.get(field)
    try:
        digest = Digest.parse(text if isinstance(text, str) else "")
    except InvalidDigest:
        return None
    size = descriptor.get("size")
    size = size if isinstance(size, int) and size >= 0 else None
    return Content(digest, size, _platform(descriptor.get("platform")))


def _platform(value: Any) -> Platform | None:
    if not isinstance(value, dict):
        return None
    os, architecture = value.get("os"), value.get("architecture")
    if not isinstance(os, str) or not isinstance(architecture, str):
        return None
    variant = value.get("variant")
    return Platform(os, architecture, variant if isinstance(variant, str) else None)
