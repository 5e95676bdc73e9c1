"""Images put in the cache from outside the pull path (an imported bundle), made servable:
their manifests stored, the references of their repository learned and written, and only then
their tag pointed at them, so that no server sharing the cache directory sees a tag before the
content under it is whole and readable for that repository."""

from __future__ import annotations

import time

from proxy.cache.closure import Closure
from proxy.cache.images import point_tag, tagged_images
from proxy.cache.manifests import ANY_ACCEPT
from proxy.cache.usage import Usage
from proxy.model import Kind, RepoRef, TagEntry, TagKey
from proxy.store import Index

TagName = tuple[str, str, str]  # upstream, repository, tag


class ImageRecorder:
    """``await ImageRecorder.load(index, usage)``, then ``record`` each whole image."""

    def __init__(self, index: Index, usage: Usage, accepts: dict[TagName, list[TagKey]]) -> None:
        self._index = index
        self._usage = usage
        self._accepts = accepts

    @classmethod
    async def load(cls, index: Index, usage: Usage) -> ImageRecorder:
        """With the Accept lists each tag is known under, read once for every image."""
        accepts = {
            (image.upstream, image.repository, image.tag): image.keys
            for image in await tagged_images(index)
        }
        return cls(index, usage, accepts)

    async def record(self, ref: RepoRef, tag: str | None, closure: Closure) -> None:
        """``closure`` must be complete, its blobs in the store; its manifests are stored here."""
        for manifest in closure.manifests:
            await self._index.put_manifest(manifest)
            self._usage.learn(Kind.MANIFEST, manifest.digest, ref)
            self._usage.learn_manifest(manifest, ref)
        await self._usage.flush()
        if tag is not None:
            root = closure.manifests[0]
            entry = TagEntry(root.digest, root.media_type, len(root.body), time.time())
            key = TagKey(ref.upstream, ref.repository, tag, ANY_ACCEPT)
            known = self._accepts.get((ref.upstream, ref.repository, tag), [])
            await point_tag(self._index, key, entry, known)
