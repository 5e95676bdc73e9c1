"""Image references as a person writes them on a command line: ``REGISTRY/REPOSITORY:TAG`` or
``REGISTRY/REPOSITORY@sha256:...``. Pure code; which upstream REGISTRY names is routing's
business."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.names import InvalidName, InvalidTag, validate_name
from proxy.oci.reference import Reference

DEFAULT_TAG = "latest"


class InvalidImage(ValueError):
    """Not an image reference; the message says why, for the person who typed it."""


@dataclass(frozen=True, slots=True)
class ImageName:
    registry: str
    name: str  # the repository as written, before an upstream's rules (library/) apply
    reference: Reference


def parse_image(text: str) -> ImageName:
    """``docker.io/alpine:3.20``, ``ghcr.io/acme/app@sha256:...``; no tag means ``latest``,
    as with Docker. The registry is required: an image is always named in full here."""
    rest, at, digest_text = text.partition("@")
    registry, slash, path = rest.partition("/")
    if not slash or not registry or not path:
        raise InvalidImage(f"{text[:200]!r}: name the registry, e.g. docker.io/library/alpine:3.20")
    name, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    try:
        validate_name(name)
        if at:
            reference = Reference(digest=Digest.parse(digest_text))
        else:
            reference = Reference.parse(tag if colon else DEFAULT_TAG)
    except (InvalidName, InvalidTag, InvalidDigest) as exc:
        raise InvalidImage(f"{text[:200]!r}: {exc}") from None
    if at and colon:
        raise InvalidImage(f"{text[:200]!r}: a tag and a digest; give one")
    return ImageName(registry, name, reference)
