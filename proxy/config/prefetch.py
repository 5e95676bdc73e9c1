"""The file's ``prefetch:`` list: tags a running regcache resolves again on a schedule, and
fetches when they move, before any client asks (proxy.cache.prefetch).

Checked here for shape, with the file's line; that each image's registry is an upstream is
checked once every source is merged (proxy.config.loader).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from yaml.nodes import Node

from proxy.config.access import ItemReader
from proxy.config.nodes import node_text
from proxy.config.parsers import Invalid, parse_duration
from proxy.oci.imageref import InvalidImage, parse_image

PREFETCH_KEYS: tuple[str, ...] = ("images", "every", "platforms")
_PLATFORM = re.compile(r"[a-z0-9._-]+/[a-z0-9._-]+(/[a-z0-9._-]+)?")


@dataclass(frozen=True)
class PrefetchRule:
    """``images`` are full references by tag; ``platforms`` (``os/arch[/variant]``) are the
    ones fetched from a multi-platform image, every one when empty."""

    images: tuple[str, ...]
    every: float  # seconds
    platforms: tuple[str, ...] = ()
    line: int | None = field(default=None, compare=False)


def check_image(text: str) -> str:
    try:
        image = parse_image(text)
    except InvalidImage as exc:
        raise Invalid(str(exc)) from None
    if image.reference.tag is None:
        raise Invalid(f"{text!r}: name a tag; a digest never moves, so there is nothing to follow")
    return text


def check_platform(text: str) -> str:
    if not _PLATFORM.fullmatch(text):
        raise Invalid(f"{text!r} is not a platform such as linux/amd64 or linux/arm/v7")
    return text


def read_prefetch(source: str, node: Node) -> tuple[PrefetchRule, ...]:
    reader = ItemReader(source)
    rules = []
    for item, prefix in reader.items(node, "prefetch"):
        found = reader.fields(item, prefix, PREFETCH_KEYS, ("images", "every"))
        images = reader.strings(found["images"], f"{prefix}.images", check_image)
        try:
            every = parse_duration(node_text(found["every"]))
        except Invalid as exc:
            raise reader.error(found["every"], f"{prefix}.every", str(exc)) from None
        platforms: tuple[str, ...] = ()
        if "platforms" in found:
            platforms = reader.strings(found["platforms"], f"{prefix}.platforms", check_platform)
        rules.append(PrefetchRule(images, every, platforms, item.start_mark.line + 1))
    return tuple(rules)
