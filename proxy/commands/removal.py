"""``regcache rm`` and ``regcache prune``: images out of the cache, with the content only
they held (see proxy.cache.reachability)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from proxy.cache.images import TaggedImage, last_used, tagged_images, untag
from proxy.cache.reachability import Garbage, collect, delete
from proxy.commands.common import (
    FAILED,
    USAGE,
    add_cache_options,
    add_json_option,
    fail,
    load,
    run,
)
from proxy.commands.output import emit, human_size
from proxy.config import Config
from proxy.config.parsers import Invalid, parse_duration
from proxy.oci.digest import Digest
from proxy.oci.imageref import InvalidImage
from proxy.server.cacheparts import CacheParts, open_cache

COLUMNS = ("kind", "name", "size")
DEFAULT_AGE = "30d"


def add_parsers(commands: Any) -> None:
    rm = commands.add_parser(
        "rm",
        help="remove images from the cache",
        description="Remove each IMAGE's tag (or, for IMAGE@DIGEST, every tag of the "
        "repository pointing at it), then the manifests and blobs no other cached image or "
        "pin needs. A pinned image is refused: unpin it first. A server running on the same "
        "cache directory fetches again whatever it is asked for that is gone.",
    )
    rm.add_argument(
        "images", nargs="+", metavar="IMAGE", help="REGISTRY/REPOSITORY:TAG or ...@sha256:..."
    )
    prune = commands.add_parser(
        "prune",
        help="remove images not served for a while",
        description="Remove the images (tags) not served for longer than --older-than "
        "(content never served counts from when it was stored), and the content no "
        "remaining image or pin needs that was not used for as long. Pinned images stay.",
    )
    prune.add_argument(
        "--older-than",
        default=DEFAULT_AGE,
        metavar="AGE",
        help=f"a duration such as 30d, 12h or 3600 (seconds); default {DEFAULT_AGE}",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    for parser, handler in ((rm, _handle_rm), (prune, _handle_prune)):
        add_cache_options(parser)
        add_json_option(parser)
        parser.set_defaults(handler=handler)


@dataclass
class Removal:
    images: dict[str, TaggedImage] = field(default_factory=dict)  # by full name
    roots: set[Digest] = field(default_factory=set)  # the manifests the removed tags name
    content: list[Garbage] = field(default_factory=list)
    failed: bool = False

    def add(self, image: TaggedImage) -> None:
        self.images[image.name] = image
        self.roots |= image.digests

    def remaining(self, images: list[TaggedImage]) -> list[TaggedImage]:
        return [image for image in images if image.name not in self.images]


def _handle_rm(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return USAGE
    return run(remove_images(config, args.images, as_json=args.json))


def _handle_prune(args: argparse.Namespace) -> int:
    try:
        age = parse_duration(args.older_than)
    except Invalid as exc:
        fail(f"--older-than: {exc}")
        return USAGE
    config = load(args)
    if config is None:
        return USAGE
    return run(prune_images(config, age, dry_run=args.dry_run, as_json=args.json))


async def remove_images(config: Config, names: list[str], *, as_json: bool) -> int:
    async with open_cache(config, evict=False) as parts:
        images = await tagged_images(parts.index)
        pins = await parts.index.pins()
        removal = Removal()
        for text in names:
            removal.failed |= not await _choose(parts, images, pins, text, removal)
        remaining = removal.remaining(images)
        removal.content = await collect(parts.index, parts.store, removal.roots, remaining)
        freed = await _carry_out(parts, removal)
    _report(removal, freed, as_json=as_json, dry_run=False)
    return FAILED if removal.failed else 0


async def _choose(
    parts: CacheParts, images: list[TaggedImage], pins: dict[str, Any], text: str, removal: Removal
) -> bool:
    """Add what ``text`` names to the removal; False after saying why not."""
    try:
        target, reference = parts.router.route_image(text)
    except InvalidImage as exc:
        fail(str(exc))
        return False
    name, digest = target.image(reference), reference.digest
    chosen = [
        image
        for image in images
        if image.ref == target.ref and (image.tag == reference.tag or digest in image.digests)
    ]
    if not chosen and (digest is None or await parts.index.get_manifest(digest) is None):
        fail(f"{name}: not in the cache")
        return False
    if name in pins or any(image.name in pins for image in chosen):
        fail(f"{name}: pinned; `regcache unpin` it first")
        return False
    for image in chosen:
        removal.add(image)
    if digest is not None:
        removal.roots.add(digest)  # pulled by digest, maybe with no tag at all
    return True


async def prune_images(config: Config, age: float, *, dry_run: bool, as_json: bool) -> int:
    cutoff = time.time() - age
    async with open_cache(config, evict=False) as parts:
        images = await tagged_images(parts.index)
        pins = await parts.index.pins()
        removal = Removal()
        for image in images:
            last = await last_used(parts.index, image)
            # Never served: from when it was recorded (pulled, imported).
            last = image.entry.checked_at if last is None else last
            if image.name not in pins and last < cutoff:
                removal.add(image)
        remaining = removal.remaining(images)
        removal.content = await collect(
            parts.index, parts.store, removal.roots, remaining, unused_before=cutoff
        )
        freed = sum(item.size for item in removal.content)
        if not dry_run:
            freed = await _carry_out(parts, removal)
    _report(removal, freed, as_json=as_json, dry_run=dry_run)
    return 0


async def _carry_out(parts: CacheParts, removal: Removal) -> int:
    """Tags first, so that no tag ever points at content already gone."""
    for image in removal.images.values():
        await untag(parts.index, image)
    return await delete(parts.index, parts.store, removal.content)


def _report(removal: Removal, freed: int, *, as_json: bool, dry_run: bool) -> None:
    rows: list[dict[str, Any]] = [
        {"kind": "image", "name": name, "size": None} for name in removal.images
    ]
    rows += [
        {"kind": item.kind.value, "name": str(item.digest), "size": item.size}
        for item in removal.content
    ]
    if not as_json:
        for row in rows:
            row["size"] = human_size(row["size"])
    verb = "would remove" if dry_run else "removed"
    emit(rows, COLUMNS, as_json=as_json, title=f"{verb} from the cache")
    kinds = [row["kind"] for row in rows]
    summary = (
        f"{verb} {kinds.count('image')} images, {kinds.count('manifest')} manifests, "
        f"{kinds.count('blob')} blobs: {human_size(freed)} "
        + ("would be freed" if dry_run else "freed")
    )
    print(summary, file=sys.stderr if as_json else sys.stdout)
