"""``regcache inventory``: what a cache holds, as a file for ``regcache export --have`` on the
connected side, so that the next bundle carries only what this side lacks.

The file (``"format": "regcache-inventory"``, ``"version": 1``) lists the digests of every
manifest and every blob in the cache, and every tag with the digest it points at. A reader
refuses another format or a later version rather than guess at it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.cache.images import tagged_images
from proxy.commands.common import FAILED, USAGE, add_cache_options, add_json_option, fail, load
from proxy.commands.common import run as run_command
from proxy.commands.output import emit
from proxy.oci.digest import Digest, InvalidDigest
from proxy.server.cacheparts import CacheParts, open_cache

FORMAT = "regcache-inventory"
VERSION = 1


class InvalidInventory(ValueError):
    """Not an inventory this regcache can read; the message says why."""


@dataclass(frozen=True)
class Inventory:
    manifests: frozenset[Digest]
    blobs: frozenset[Digest]
    tags: dict[str, Digest]  # full image name -> manifest digest

    def has(self, digest: Digest) -> bool:
        return digest in self.blobs or digest in self.manifests


async def take_inventory(parts: CacheParts) -> Inventory:
    manifests = frozenset([digest async for digest, _ in parts.index.manifest_sizes()])
    blobs = frozenset([digest async for digest in parts.store.digests()])
    tags = {image.name: image.entry.digest for image in await tagged_images(parts.index)}
    return Inventory(manifests, blobs, tags)


def inventory_document(inventory: Inventory) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifests": sorted(str(d) for d in inventory.manifests),
        "blobs": sorted(str(d) for d in inventory.blobs),
        "tags": [{"image": name, "digest": str(d)} for name, d in inventory.tags.items()],
    }


def read_inventory(path: Path) -> Inventory:
    """Raises InvalidInventory naming the file and what is wrong with it."""
    try:
        document = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InvalidInventory(f"not a {FORMAT} file")
        if document.get("version") != VERSION:
            raise InvalidInventory(
                f"version {document.get('version')!r}; this regcache reads version {VERSION}"
            )
        return Inventory(
            frozenset(Digest.parse(d) for d in document["manifests"]),
            frozenset(Digest.parse(d) for d in document["blobs"]),
            {t["image"]: Digest.parse(t["digest"]) for t in document["tags"]},
        )
    except (OSError, ValueError, KeyError, TypeError, InvalidDigest) as exc:
        raise InvalidInventory(f"{path}: {exc}") from None


def write_atomically(path: Path, data: bytes) -> None:
    """The whole file or none: written beside it, then renamed over it."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "inventory",
        help="write what this cache holds, for `regcache export --have`",
        description="Write a JSON inventory of this cache: the digests of its manifests and "
        "blobs and its tags. Give it to `regcache export --have` on the connected side, whose "
        "bundle then carries only what this cache lacks.",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="INVENTORY.json")
    add_cache_options(parser)
    add_json_option(parser)
    parser.set_defaults(handler=lambda args: run_command(inventory(args)))


async def inventory(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return USAGE
    async with open_cache(config, evict=False) as parts:
        found = await take_inventory(parts)
    document = inventory_document(found)
    try:
        write_atomically(args.output, json.dumps(document, indent=1).encode() + b"\n")
    except OSError as exc:
        fail(f"cannot write {args.output}: {exc}")
        return FAILED
    row = {
        "inventory": str(args.output),
        "manifests": len(found.manifests),
        "blobs": len(found.blobs),
        "tags": len(found.tags),
    }
    emit([row], list(row), as_json=args.json, title="inventory")
    return 0
