"""Warming images: the walk from a tag to every manifest and blob the image needs, fetching
what the cache lacks, whichever way the bytes come (the cache directory itself, or a running
regcache; see warmsources.py).

Blobs are fetched at most ``concurrency`` at a time over all images, and a blob two images
share is fetched once: the second waits for the first's fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxy.commands.output import human_size
from proxy.commands.progress import Item, Reporter
from proxy.errors import RegistryError
from proxy.oci.contents import Content, Contents, Platform, contents
from proxy.oci.digest import Digest
from proxy.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class Image:
    name: str  # the full reference, docker.io/library/alpine:3.20: what a pin is called
    registry: str  # the upstream's name
    repository: str
    reference: Reference


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    body: bytes
    fetched: bool  # False: it was in the cache already


class Source(Protocol):
    """Where a warm gets its bytes, into the cache. Raises RegistryError."""

    async def manifest(self, image: Image, reference: Reference) -> Manifest: ...

    async def cached_size(self, image: Image, blob: Content) -> int | None:
        """The blob's size if the cache holds it for the image, else None."""

    async def fetch_blob(self, image: Image, blob: Content, advance: Callable[[int], None]) -> int:
        """Fetch the blob into the cache, reporting bytes as they arrive; its size."""


class WarmFailed(Exception):
    """The image cannot be warmed as asked (a platform it lacks); the message says why."""


@dataclass
class Outcome:
    image: Image
    digest: Digest | None = None
    platforms: list[str] = field(default_factory=list)
    blobs: set[Digest] = field(default_factory=set)
    # Every manifest and blob the image needs (what a pin keeps): size, and fetched or not.
    contents: dict[Digest, tuple[int, bool]] = field(default_factory=dict)
    error: str | None = None

    def bytes(self, fetched: bool) -> int:
        return sum(size for size, was in self.contents.values() if was is fetched)


class Warmer:
    def __init__(
        self,
        source: Source,
        progress: Reporter,
        platforms: Sequence[Platform] = (),
        concurrency: int = 4,
    ) -> None:
        self._source = source
        self._progress = progress
        self._platforms = tuple(platforms)  # none: every platform
        self._slots = asyncio.Semaphore(concurrency)
        self._fetching: dict[Digest, asyncio.Task[int]] = {}

    async def warm_all(self, images: Sequence[Image]) -> list[Outcome]:
        return list(await asyncio.gather(*(self.warm(image) for image in images)))

    async def warm(self, image: Image) -> Outcome:
        outcome = Outcome(image)
        item: Item | None = None
        try:
            blobs = await self._manifests(image, outcome)
            missing = []
            for blob in blobs:
                size = await self._source.cached_size(image, blob)
                if size is None:
                    missing.append(blob)
                else:
                    outcome.contents[blob.digest] = (size, False)
            item = self._progress.item(image.name, sum(blob.size or 0 for blob in missing))
            await self._fetch_all(image, missing, outcome, item)
        except (RegistryError, WarmFailed) as error:
            outcome.error = _reason(error)
            (item or self._progress.item(image.name)).fail(outcome.error)
            return outcome
        fetched, present = outcome.bytes(True), outcome.bytes(False)
        item.finish(
            f"{len(outcome.blobs)} blobs, {human_size(fetched)} fetched, "
            f"{human_size(present)} already present"
        )
        return outcome

    async def _manifests(self, image: Image, outcome: Outcome) -> list[Content]:
        """Fetch the image's manifest and the chosen platforms' ones; the blobs they name."""
        top = await self._manifest(image, image.reference, outcome)
        outcome.digest = top.digest
        found = contents(top.body)
        blobs = list(found.blobs)
        for child in self._chosen(found):
            manifest = await self._manifest(image, Reference(digest=child.digest), outcome)
            blobs += contents(manifest.body).blobs
            if child.platform is not None:
                outcome.platforms.append(str(child.platform))
        unique = {blob.digest: blob for blob in blobs}
        outcome.blobs = set(unique)
        return list(unique.values())

    async def _manifest(self, image: Image, reference: Reference, outcome: Outcome) -> Manifest:
        manifest = await self._source.manifest(image, reference)
        outcome.contents[manifest.digest] = (len(manifest.body), manifest.fetched)
        return manifest

    def _chosen(self, found: Contents) -> list[Content]:
        if not self._platforms:
            return list(found.manifests)
        chosen = [c for c in found.manifests if any(p.matches(c.platform) for p in self._platforms)]
        for platform in self._platforms:
            if found.is_index and not any(platform.matches(c.platform) for c in chosen):
                offered = ", ".join(str(c.platform) for c in found.manifests if c.platform)
                raise WarmFailed(f"no manifest for {platform} (the index has: {offered or '-'})")
        return chosen

    async def _fetch_all(
        self, image: Image, missing: list[Content], outcome: Outcome, item: Item
    ) -> None:
        results = await asyncio.gather(
            *(self._fetch(image, blob, item) for blob in missing), return_exceptions=True
        )
        for blob, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            outcome.contents[blob.digest] = (result, True)

    async def _fetch(self, image: Image, blob: Content, item: Item) -> int:
        task = self._fetching.get(blob.digest)
        if task is not None:
            # Another image's fetch of the same blob: counted here once it is done.
            size = await asyncio.shield(task)
            item.advance(size)
            return size
        task = asyncio.create_task(self._fetch_one(image, blob, item))
        self._fetching[blob.digest] = task
        return await asyncio.shield(task)

    async def _fetch_one(self, image: Image, blob: Content, item: Item) -> int:
        async with self._slots:
            return await self._source.fetch_blob(image, blob, item.advance)


def _reason(error: RegistryError | WarmFailed) -> str:
    if isinstance(error, RegistryError):
        return f"{error.error_code}: {error.message}"
    return str(error)
