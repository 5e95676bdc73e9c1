"""``regcache ls``: the cached images, one row per tag."""

from __future__ import annotations

import argparse
import time
from typing import Any

from proxy.cache.images import TaggedImage, last_used, tagged_images
from proxy.cache.reachability import reachable
from proxy.commands.common import USAGE, add_cache_options, add_json_option, load, run
from proxy.commands.output import emit, human_size
from proxy.config import Config
from proxy.oci.platforms import config_digest, config_platform, index_children
from proxy.server.cacheparts import CacheParts, open_cache

COLUMNS = (
    "upstream",
    "repository",
    "tag",
    "digest",
    "platforms",
    "size",
    "last_served",
    "pinned",
)
# A config is a few KiB; anything far bigger is not read just to name a platform.
MAX_CONFIG_BYTES = 1024 * 1024
# Build tools list their attestations in the index under this platform.
NOT_A_PLATFORM = "unknown/unknown"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ls",
        help="list the cached images",
        description="List the cached images, one row per tag: its digest, platforms, the "
        "bytes cached for it (shared layers counted in every image that has them), when it "
        "was last served (or stored, for content never served) and whether it is pinned.",
    )
    add_cache_options(parser)
    add_json_option(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return USAGE
    return run(list_images(config, as_json=args.json))


async def list_images(config: Config, *, as_json: bool) -> int:
    async with open_cache(config, evict=False) as parts:
        pins = await parts.index.pins()
        rows = [
            await _row(parts, image, pins)
            for image in await tagged_images(parts.index)
            # A tag answered to a HEAD only is a remembered answer, not a cached image.
            if await parts.index.get_manifest(image.entry.digest) is not None
        ]
    if not as_json:
        for row in rows:
            row["size"] = human_size(row["size"])
            row["last_served"] = row["last_served"] or "never"
            row["platforms"] = row["platforms"] or "-"
            row["digest"] = row["digest"][:19]  # as docker images shows IDs: enough to tell
    emit(rows, COLUMNS, as_json=as_json, title="cached images")
    return 0


async def _row(parts: CacheParts, image: TaggedImage, pins: dict[str, Any]) -> dict[str, Any]:
    digest = image.entry.digest
    content = await reachable(parts.index, [digest])
    size = 0
    for manifest in content.manifests:
        stored = await parts.index.get_manifest(manifest)
        size += len(stored.body) if stored is not None else 0
    for blob in content.blobs:
        size += await parts.store.size(blob) or 0
    last = await last_used(parts.index, image)
    pinned_names = (image.name, f"{image.upstream}/{image.repository}@{digest}")
    return {
        "upstream": image.upstream,
        "repository": image.repository,
        "tag": image.tag,
        "digest": str(digest),
        "platforms": await _platforms(parts, image),
        "size": size,
        "last_served": _iso(last),
        "pinned": any(name in pins for name in pinned_names),
    }


async def _platforms(parts: CacheParts, image: TaggedImage) -> list[str]:
    """An index's platforms, or the one its config names for a single image."""
    stored = await parts.index.get_manifest(image.entry.digest)
    if stored is None:
        return []
    children = index_children(stored.body)
    if children is not None:
        names = (child.platform for child in children)
        return sorted({name for name in names if name and name != NOT_A_PLATFORM})
    config = config_digest(stored.body)
    blob = await parts.store.reader(config) if config is not None else None
    if blob is None:
        return []
    if blob.size > MAX_CONFIG_BYTES:
        await blob.close()
        return []
    try:
        body = b"".join([chunk async for chunk in blob.read(0, blob.size)])
    finally:
        await blob.close()
    name = config_platform(body)
    return [name] if name else []


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
