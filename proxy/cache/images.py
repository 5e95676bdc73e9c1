"""The cached images as people name them: one per tag, whatever Accept lists it was asked with.

The tag index keeps a tag once per Accept list a client sent, and once more under
``ANY_ACCEPT``; ls, rm, prune and prefetch speak of the tag, so its entries are gathered
here, the ``ANY_ACCEPT`` one preferred as the tag's answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.cache.manifests import ANY_ACCEPT
from proxy.model import Kind, RepoRef, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store import Index


@dataclass
class TaggedImage:
    upstream: str
    repository: str
    tag: str
    entry: TagEntry  # the answer: the ANY_ACCEPT entry when there is one
    keys: list[TagKey] = field(default_factory=list)  # every Accept list's entry
    digests: set[Digest] = field(default_factory=set)  # what any of them points at

    @property
    def name(self) -> str:
        return f"{self.upstream}/{self.repository}:{self.tag}"

    @property
    def ref(self) -> RepoRef:
        return RepoRef(self.upstream, self.repository)


async def tagged_images(index: Index) -> list[TaggedImage]:
    """Every cached tag once, sorted by upstream, repository and tag."""
    found: dict[tuple[str, str, str], TaggedImage] = {}
    async for key, entry in index.tags():
        image = found.get((key.upstream, key.repository, key.tag))
        if image is None:
            image = TaggedImage(key.upstream, key.repository, key.tag, entry)
            found[(key.upstream, key.repository, key.tag)] = image
        elif key.accept == ANY_ACCEPT:
            image.entry = entry
        image.keys.append(key)
        image.digests.add(entry.digest)
    return [found[name] for name in sorted(found)]


async def last_used(index: Index, image: TaggedImage) -> float | None:
    """When the image's repository last used one of its manifests (served, or recorded when
    pulled, warmed or imported); None when there is no record."""
    times = []
    for digest in image.digests:
        uses = await index.references(Kind.MANIFEST, digest)
        if image.ref in uses:
            times.append(uses[image.ref])
    return max(times, default=None)


async def untag(index: Index, image: TaggedImage) -> None:
    for key in image.keys:
        await index.delete_tag(key)


async def point_tag(index: Index, key: TagKey, entry: TagEntry, known: Iterable[TagKey]) -> None:
    """Set the tag's accept-independent entry ``key`` to ``entry``, and each other entry it is
    ``known`` under to the same image when that Accept list takes its media type, dropping it
    otherwise: an entry left naming an older image would keep answering with it, for its TTL
    online and for good offline. Used wherever a tag moves outside a client's pull."""
    await index.put_tag(key, entry)
    for other in known:
        if other.accept == ANY_ACCEPT:
            continue
        if entry.media_type in other.accept:
            await index.put_tag(other, entry)
        else:
            await index.delete_tag(other)


async def tag_keys(index: Index, key: TagKey) -> list[TagKey]:
    """Every entry the tag of ``key`` is kept under, whatever its Accept list."""
    name = (key.upstream, key.repository, key.tag)
    return [k async for k, _ in index.tags() if (k.upstream, k.repository, k.tag) == name]
