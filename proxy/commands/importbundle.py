"""``regcache import``: a bundle (``regcache export``'s, or any OCI layout tar archive that
skopeo or Docker wrote) into the cache, verified entry by entry, each image's tag written only
once everything the image needs is in the cache. A server running on the same cache directory
serves the images at once: it reads tags, manifests and references from the shared index."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from proxy.cache.closure import image_closure
from proxy.cache.imported import ImageRecorder
from proxy.commands.bundleread import BadEntry, BundleReader, ReadBundle
from proxy.commands.common import FAILED, USAGE, add_cache_options, add_json_option, fail, load
from proxy.commands.common import run as run_command
from proxy.commands.progress import Reporter
from proxy.commands.transfers import Transfer
from proxy.model import StoredManifest
from proxy.oci.digest import Digest
from proxy.oci.imageref import InvalidImage
from proxy.oci.layout import LayoutImage
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.server.cacheparts import CacheParts, open_cache


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="load a bundle (an OCI layout tar archive) into the cache",
        description="Load the images of an OCI layout tar archive (from `regcache export`, "
        "skopeo or Docker) into the cache, checking every entry against its digest. A tag "
        "appears only once its image is whole; a corrupt or truncated archive is rejected "
        "(exit 1) with the entry named, and the cache left as it was.",
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE.tar")
    parser.add_argument(
        "--name",
        metavar="IMAGE",
        help="the full name (REGISTRY/REPOSITORY:TAG) of the one image of an archive whose "
        "index.json does not name it in full",
    )
    add_cache_options(parser)
    add_json_option(parser)
    parser.set_defaults(handler=lambda args: run_command(import_bundle(args)))


async def import_bundle(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return USAGE
    transfer = Transfer()
    async with open_cache(config, evict=False) as parts:
        with Reporter("import") as progress:
            reader = BundleReader(parts.store, parts.index, progress, transfer)
            try:
                bundle = await reader.read(args.bundle)
            except BadEntry as exc:
                fail(f"import: {args.bundle} rejected: {exc}; nothing was imported")
                return FAILED
            failures = await _record(parts, reader, bundle, args.name, progress, transfer)
    for failure in failures:
        fail(f"import: {failure}")
    transfer.failed = len(failures)
    transfer.emit(f"import of {args.bundle}", as_json=args.json)
    return FAILED if failures else 0


async def _record(
    parts: CacheParts,
    reader: BundleReader,
    bundle: ReadBundle,
    name: str | None,
    progress: Reporter,
    transfer: Transfer,
) -> list[str]:
    """Each whole image recorded, tag last; the failures, one line each."""
    recorder = await ImageRecorder.load(parts.index, parts.usage)
    failures: list[str] = []
    recorded: set[Digest] = set()

    async def manifest_of(digest: Digest) -> StoredManifest | None:
        return bundle.manifests.get(digest) or await parts.index.get_manifest(digest)

    async def blob_size(digest: Digest) -> int | None:
        if digest in bundle.manifests and await parts.store.size(digest) is None:
            # Read as a manifest for its looks, listed as a blob: stored as one after all.
            await reader.store_bytes(digest, bundle.manifests[digest].body)
        return await parts.store.size(digest)

    for image in bundle.images:
        try:
            target, reference = _route(parts, image, name, len(bundle.images))
        except InvalidImage as exc:
            failures.append(str(exc))
            continue
        full = target.image(reference)
        closure = await image_closure(image.digest, manifest_of, blob_size)
        if not closure.complete:
            failures.append(f"{full}: the bundle and the cache lack {closure.lacking()}")
            continue
        await recorder.record(target.ref, reference.tag, closure)
        new = {m.digest for m in closure.manifests if m.digest in bundle.manifests} - recorded
        recorded |= new
        transfer.images += 1
        transfer.manifests += len(new)
        transfer.written += sum(len(bundle.manifests[d].body) for d in new)
        progress.note(f"import {full}: ready ({closure.root})")
    return failures


def _route(
    parts: CacheParts, image: LayoutImage, name: str | None, count: int
) -> tuple[Target, Reference]:
    """The configured upstream, repository and tag the image goes under; raises InvalidImage."""
    if name is not None and count != 1:
        raise InvalidImage(f"--name names the image of a one-image archive; this one has {count}")
    text = name or image.name
    if text is None:
        raise InvalidImage(f"image {image.digest} has no name in index.json; give it with --name")
    try:
        target, reference = parts.router.route_image(text)
    except InvalidImage as exc:
        raise InvalidImage(f"image {image.digest}: {exc}; give its full name with --name") from None
    if reference.digest is not None and reference.digest != image.digest:
        raise InvalidImage(f"image {image.digest} is named {text!r}, which names another digest")
    return target, reference
