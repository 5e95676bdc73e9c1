"""Platforms (``os/arch[/variant]``) of an image: an index's children, or one image's config.

Pure and tolerant like ``proxy.oci.manifest``: what cannot be read is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.manifest import MAX_REFERENCES


@dataclass(frozen=True, slots=True)
class Child:
    """A manifest an index lists, with the platform it is for ("" when it names none, as
    an attestation's does)."""

    digest: Digest
    platform: str


def platform_name(fields: Any) -> str:
    """``os/arch[/variant]`` of an index descriptor's ``platform`` or of an image config."""
    if not isinstance(fields, dict):
        return ""
    os_name, arch = fields.get("os"), fields.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return ""
    variant = fields.get("variant")
    name = f"{os_name}/{arch}"
    return f"{name}/{variant}" if isinstance(variant, str) and variant else name


def index_children(body: bytes) -> list[Child] | None:
    """The manifests an index lists, in its order; None when the body is not an index."""
    document = _document(body)
    manifests = document.get("manifests") if document is not None else None
    if not isinstance(manifests, list):
        return None
    children = []
    for descriptor in manifests[:MAX_REFERENCES]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            continue
        try:
            digest = Digest.parse(descriptor["digest"])
        except InvalidDigest:
            continue
        children.append(Child(digest, platform_name(descriptor.get("platform"))))
    return children


def config_platform(body: bytes) -> str:
    """The platform an image config says it is for, or ""."""
    return platform_name(_document(body))


def config_digest(body: bytes) -> Digest | None:
    """The config blob an image manifest names; None for anything else."""
    document = _document(body)
    config = document.get("config") if document is not None else None
    text = config.get("digest") if isinstance(config, dict) else None
    try:
        return Digest.parse(text) if isinstance(text, str) else None
    except InvalidDigest:
        return None


def matches(platform: str, wanted: tuple[str, ...]) -> bool:
    """Whether ``platform`` is one of ``wanted`` (all when empty); ``linux/arm64`` matches
    ``linux/arm64/v8`` as Docker matches it."""
    if not wanted:
        return True
    return any(platform == w or platform.startswith(w + "/") for w in wanted)


def _document(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
