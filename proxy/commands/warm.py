"""``regcache warm``: fetch images into the cache ahead of the clients that will pull them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

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
from proxy.commands.progress import Reporter
from proxy.commands.warming import Image, Outcome, Source, Warmer
from proxy.commands.warmsources import CacheSource, ServerSource
from proxy.config import Config
from proxy.oci.contents import InvalidPlatform, Platform
from proxy.oci.digest import Digest
from proxy.oci.imageref import InvalidImage, parse_image
from proxy.routing import Router
from proxy.server.cacheparts import open_cache

_DESCRIPTION = """\
Fetch each image's manifest (a multi-platform image's whole index, and the manifests of the
chosen platforms: all of them by default) and every blob into the cache, so that clients,
or an offline regcache on this cache directory, find them there. Only what the cache lacks
is fetched; the summary says how much was there already.

IMAGE is a full reference, REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:..., where
REGISTRY is a configured upstream or alias (docker.io/alpine is docker.io/library/alpine:latest).

Without --server, warm works on the cache directory itself (it may run beside a regcache
serving the same directory) and fetches from the config's upstreams. With --server URL it
pulls through that running regcache instead, which caches what it serves.

exit status: 0 every image warmed; 1 some image failed (each is named, with the reason);
2 a usage or configuration error."""

_EPILOG = """\
examples:
  regcache warm docker.io/library/alpine:3.20 ghcr.io/acme/app:stable --pin
  regcache warm --file images.txt --platform linux/amd64 --cache-dir /var/lib/regcache
  regcache warm --server http://cache.internal:5000 docker.io/library/nginx:1.27"""


@dataclass(frozen=True)
class WarmOptions:
    platforms: tuple[Platform, ...]
    concurrency: int
    pin: bool
    server: str | None
    as_json: bool


def add_parser(commands: Any) -> None:
    warm = commands.add_parser(
        "warm",
        help="fetch images into the cache ahead of time",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    warm.add_argument("images", nargs="*", metavar="IMAGE", help="an image to warm")
    warm.add_argument(
        "--file",
        type=Path,
        metavar="LIST",
        help="a file of images, one a line; blank lines and # comments are ignored",
    )
    warm.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH",
        help="warm only this platform of a multi-platform image (OS/ARCH[/VARIANT]); "
        "repeatable; default: every platform",
    )
    warm.add_argument(
        "--all-platforms", action="store_true", help="warm every platform (the default)"
    )
    warm.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="blobs fetched at once, over all images (default: 4)",
    )
    warm.add_argument(
        "--pin", action="store_true", help="keep the images out of eviction until `regcache unpin`"
    )
    warm.add_argument("--server", metavar="URL", help="pull through the regcache running at URL")
    add_cache_options(warm)
    add_json_option(warm)
    warm.set_defaults(handler=_warm)


def _warm(args: argparse.Namespace) -> int:
    config = load(args)
    options = _options(args)
    texts = _image_texts(args)
    if config is None or options is None or texts is None:
        return USAGE
    try:
        images = [plan_image(text, Router(config), options.server is not None) for text in texts]
    except InvalidImage as exc:
        fail(str(exc))
        return USAGE
    return run(warm_images(config, images, options))


def _options(args: argparse.Namespace) -> WarmOptions | None:
    """The options, or None after saying what is wrong with them."""
    try:
        platforms = tuple(Platform.parse(text) for text in args.platform)
    except InvalidPlatform as exc:
        fail(f"--platform {exc}")
        return None
    problem = None
    if platforms and args.all_platforms:
        problem = "--platform and --all-platforms contradict each other; give one"
    elif args.concurrency < 1:
        problem = "--concurrency must be at least 1"
    elif args.pin and args.server:
        problem = "--pin works on the cache directory; leave out --server to pin"
    if problem is not None:
        fail(problem)
        return None
    return WarmOptions(platforms, args.concurrency, args.pin, args.server, args.json)


def _image_texts(args: argparse.Namespace) -> list[str] | None:
    texts = list(args.images)
    if args.file is not None:
        try:
            texts += read_image_list(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--file {args.file}: {exc}")
            return None
    if not texts:
        fail("name at least one IMAGE, or a --file of them")
        return None
    return texts


def read_image_list(text: str) -> list[str]:
    """One image a line; blank lines and ``#`` comments, whole-line or trailing, are not."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def plan_image(text: str, router: Router, through_server: bool) -> Image:
    """The image a command line names. Through a server, a registry this config does not
    know is left for the server to route, as it is the server's upstreams that count."""
    try:
        target, reference = router.route_image(text)
    except InvalidImage:
        if not through_server:
            raise
        parsed = parse_image(text)  # still raises for what is no image reference at all
        separator = "@" if parsed.reference.digest is not None else ":"
        name = f"{parsed.registry}/{parsed.name}{separator}{parsed.reference}"
        return Image(name, parsed.registry, parsed.name, parsed.reference)
    name = target.image(reference)
    return Image(name, target.upstream.name, target.repository, reference)


async def warm_images(config: Config, images: Sequence[Image], options: WarmOptions) -> int:
    """Warm, pin if asked, print the summary; the exit status."""
    if options.server is not None:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            outcomes = await _warm_from(ServerSource(options.server, session), images, options)
    else:
        async with open_cache(config, evict=False) as parts:
            outcomes = await _warm_from(CacheSource(parts), images, options)
            # Now, not in the background: an offline server must find the references.
            await parts.usage.flush()
            if options.pin:
                for outcome in outcomes:
                    if outcome.error is None:
                        await parts.index.put_pin(outcome.image.name, frozenset(outcome.contents))
    _summary(outcomes, options)
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    for outcome in failed:
        fail(f"warm {outcome.image.name} failed: {outcome.error}")
    return FAILED if failed else 0


async def _warm_from(
    source: Source, images: Sequence[Image], options: WarmOptions
) -> list[Outcome]:
    with Reporter("warm") as progress:
        warmer = Warmer(source, progress, options.platforms, options.concurrency)
        return await warmer.warm_all(images)


_JSON_COLUMNS = ("image", "digest", "platforms", "blobs", "fetched", "present", "error")
# Narrower, for a terminal: failures' reasons are printed below the table.
_TABLE_COLUMNS = ("image", "platforms", "blobs", "fetched", "present", "result")


def _summary(outcomes: Sequence[Outcome], options: WarmOptions) -> None:
    if options.as_json:
        emit([_json_row(outcome) for outcome in outcomes], _JSON_COLUMNS, as_json=True)
        return
    rows = [_table_row(outcome) for outcome in outcomes]
    # Each blob once, however many images share it.
    everything: dict[Digest, tuple[int, bool]] = {}
    for outcome in outcomes:
        everything.update(outcome.contents)
    failures = sum(1 for outcome in outcomes if outcome.error is not None)
    rows.append(
        {
            "image": f"total: {len(outcomes)} images",
            "blobs": len(set().union(*(outcome.blobs for outcome in outcomes))),
            "fetched": human_size(sum(size for size, new in everything.values() if new)),
            "present": human_size(sum(size for size, new in everything.values() if not new)),
            "result": f"{failures} failed" if failures else "ok",
        }
    )
    emit(rows, _TABLE_COLUMNS, as_json=False, title="regcache warm")


def _json_row(outcome: Outcome) -> dict[str, Any]:
    return {
        "image": outcome.image.name,
        "digest": outcome.digest,
        "platforms": outcome.platforms,
        "blobs": len(outcome.blobs),
        "fetched": outcome.bytes(True),
        "present": outcome.bytes(False),
        "error": outcome.error,
    }


def _table_row(outcome: Outcome) -> dict[str, Any]:
    return {
        "image": outcome.image.name,
        "platforms": len(outcome.platforms) or None,
        "blobs": len(outcome.blobs),
        "fetched": human_size(outcome.bytes(True)),
        "present": human_size(outcome.bytes(False)),
        "result": "ok" if outcome.error is None else "FAILED",
    }
