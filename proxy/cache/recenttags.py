"""Tag answers this process read or wrote lately, kept in memory while their TTL lasts.

A warm tag lookup read the index every time: the SQLite read and its key's encoding were a
tenth of what a tag HEAD cost. An answer is the index's own (read from it, or written to it
by this process), served no longer than the index's copy would be: until ``checked_at`` is
``tag_ttl`` old. Another worker (``serve --workers``) that revalidates the tag does so only
once its copy is that old too, so they agree; a prefetch refresh in another worker may change
a tag sooner, and that answer is served here once the copy here expires, which is the
staleness ``tag_ttl`` allows anyway. A command that changes the cache (``regcache rm``,
``warm``, ``import``...) bumps the index's generation: the copies here are dropped within a
second. A fleet's replicas keep none (manifests.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from proxy.cache.besteffort import failure_log
from proxy.model import TagEntry, TagKey
from proxy.store import INDEX_FAILURES, Index

# Bounded whatever the size of the cache: each answer costs about 600 bytes (the Accept
# list is shared, see handlers.py), so at most about 2.5 MB, for the tags pulled lately.
MAX_RECENT_TAGS = 4096
# How often the index's generation is read to notice commands' changes.
GENERATION_EVERY = 1.0


class RecentTags:
    def __init__(
        self, index: Index, limit: int = MAX_RECENT_TAGS, every: float = GENERATION_EVERY
    ) -> None:
        self._index = index
        self._limit = limit
        self._every = every
        self._entries: OrderedDict[TagKey, TagEntry] = OrderedDict()
        self._generation: int | None = None
        self._looked = float("-inf")  # time.monotonic() of the last generation read

    async def get(self, key: TagKey, ttl: float, now: float) -> TagEntry | None:
        """The answer kept for ``key`` if it is younger than ``ttl`` at ``now`` (unix time)."""
        await self._follow_commands()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry.checked_at >= ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: TagKey, entry: TagEntry) -> None:
        """``entry`` is the index's answer for ``key`` now (read from it, or written to it)."""
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def forget(self, key: TagKey) -> None:
        self._entries.pop(key, None)

    async def _follow_commands(self) -> None:
        now = time.monotonic()
        if now - self._looked < self._every:
            return
        self._looked = now
        try:
            generation = await self._index.generation()
        except INDEX_FAILURES as exc:
            # Not knowing whether a command changed a tag, forget them all: the index is
            # asked instead, which answers from the upstream if it is out of reach too.
            failure_log(exc)("could not read the index's generation: %s", exc)
            self._entries.clear()
            return
        if generation != self._generation:
            self._entries.clear()
            self._generation = generation
