"""``regcache export``: images from the cache as one OCI layout tar archive (a bundle) to carry
to an air-gapped site, whole or, with ``--have``, only what the far side lacks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from proxy.cache.cachesource import CacheSource
from proxy.cache.closure import Closure, image_closure
from proxy.cache.images import tagged_images
from proxy.cache.manifests import ANY_ACCEPT
from proxy.cache.warming import Image, Silent, Warmer
from proxy.commands.bundlewrite import BundleWriter, ExportError, Planned
from proxy.commands.common import FAILED, USAGE, add_cache_options, add_json_option, fail, load
from proxy.commands.common import run as run_command
from proxy.commands.inventory import InvalidInventory, read_inventory
from proxy.commands.progress import Reporter
from proxy.commands.transfers import Transfer
from proxy.model import TagKey
from proxy.oci.digest import Digest
from proxy.oci.imageref import InvalidImage
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.server.cacheparts import CacheParts, open_cache


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="write cached images to an OCI layout tar archive (a bundle)",
        description="Write images from the cache as an OCI image layout in a tar archive, "
        "each named in index.json by its full reference, for `regcache import`, `skopeo copy "
        "oci-archive:BUNDLE.tar:IMAGE` or `ctr images import`. An image not whole in the "
        "cache is an error (exit 1) and no bundle is written, unless --fetch fetches it.",
    )
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="REGISTRY/REPOSITORY:TAG or @DIGEST"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every tagged image whole in the cache (others are named and left out)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="BUNDLE.tar")
    parser.add_argument(
        "--have",
        type=Path,
        metavar="INVENTORY.json",
        help="the far side's `regcache inventory`: leave out the manifests and blobs it holds",
    )
    parser.add_argument(
        "--fetch", action="store_true", help="fetch what the cache lacks from the upstreams first"
    )
    add_cache_options(parser)
    add_json_option(parser)
    parser.set_defaults(handler=lambda args: run_command(export(args)))


async def export(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.all):
        fail("export: name the images, or give --all")
        return USAGE
    config = load(args)
    if config is None:
        return USAGE
    try:
        have = read_inventory(args.have) if args.have else None
    except InvalidInventory as exc:
        fail(f"export: --have: {exc}")
        return USAGE
    async with open_cache(config, evict=False) as parts:
        planned, failures = await _plan(parts, args)
        if failures:
            for failure in failures:
                fail(f"export: {failure}")
            return FAILED
        # Timed from here: the rate is the bundle's, not that of any fetching before it.
        transfer = Transfer()
        with Reporter("export") as progress:
            try:
                await BundleWriter(parts.store, have, progress, transfer).write(
                    args.output, planned
                )
            except (OSError, ExportError) as exc:
                fail(f"export: {args.output}: {exc}")
                return FAILED
    transfer.emit(f"export to {args.output}", as_json=args.json)
    return 0


async def _plan(parts: CacheParts, args: argparse.Namespace) -> tuple[list[Planned], list[str]]:
    names = args.images or [image.name for image in await tagged_images(parts.index)]
    planned: list[Planned] = []
    failures: list[str] = []
    for name in names:
        try:
            planned.append(await plan_image(parts, name, fetch=args.fetch))
        except ExportError as exc:
            if args.all:
                print(f"export: left out: {exc}", file=sys.stderr)
            else:
                failures.append(str(exc))
    return planned, failures


async def plan_image(parts: CacheParts, text: str, *, fetch: bool) -> Planned:
    """The image, whole in the cache (fetched first with ``fetch``); raises ExportError."""
    try:
        target, reference = parts.router.route_image(text)
    except InvalidImage as exc:
        raise ExportError(str(exc)) from None
    name = target.image(reference)
    root = await _cached_root(parts, target, reference)
    closure = await _closure(parts, root) if root is not None else None
    if fetch and (closure is None or not closure.complete):
        source = CacheSource(parts.manifests, parts.blobs, parts.store, parts.router)
        warmed = await Warmer(source, Silent()).warm(Image.routed(target, reference))
        if warmed.error is not None or warmed.digest is None:
            raise ExportError(f"{name}: could not fetch it: {warmed.error}")
        closure = await _closure(parts, warmed.digest)
    if closure is None:
        raise ExportError(f"{name}: not in the cache (fetch it with --fetch or regcache warm)")
    if not closure.complete:
        raise ExportError(f"{name}: not whole in the cache; missing {closure.lacking()}")
    return Planned(name, closure)


async def _cached_root(parts: CacheParts, target: Target, reference: Reference) -> Digest | None:
    if reference.digest is not None:
        return reference.digest
    assert reference.tag is not None
    key = TagKey(target.upstream.name, target.repository, reference.tag, ANY_ACCEPT)
    entry = await parts.index.get_tag(key)
    return None if entry is None else entry.digest


async def _closure(parts: CacheParts, root: Digest) -> Closure:
    return await image_closure(root, parts.index.get_manifest, parts.store.size)
