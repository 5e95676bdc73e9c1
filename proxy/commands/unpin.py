"""``regcache unpin``: let pinned images be evicted again, like any other content."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from proxy.commands.common import FAILED, USAGE, add_cache_options, fail, load, run
from proxy.config import Config
from proxy.oci.imageref import InvalidImage
from proxy.routing import Router
from proxy.server.cacheparts import open_cache


def add_parser(commands: Any) -> None:
    unpin = commands.add_parser(
        "unpin",
        help="let images pinned by `regcache warm --pin` be evicted again",
        description="Remove the pins `regcache warm --pin` put on images. The content stays "
        "in the cache until eviction needs the room. Exit status 1 when an image was not "
        "pinned (each is named), 2 on a usage or configuration error.",
    )
    unpin.add_argument("images", nargs="+", metavar="IMAGE", help="an image, as warm named it")
    add_cache_options(unpin)
    unpin.set_defaults(handler=_unpin)


def _unpin(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return USAGE
    router = Router(config)
    try:
        names = [target.image(ref) for target, ref in map(router.route_image, args.images)]
    except InvalidImage as exc:
        fail(str(exc))
        return USAGE
    return run(unpin_images(config, names))


async def unpin_images(config: Config, names: Sequence[str]) -> int:
    """Remove the pins of the images by full name; 1 if any was not pinned."""
    async with open_cache(config, evict=False) as parts:
        missing = [name for name in names if not await parts.index.delete_pin(name)]
    for name in missing:
        fail(f"unpin {name}: not pinned")
    for name in names:
        if name not in missing:
            print(f"unpinned {name}")
    return FAILED if missing else 0
