"""Tag answers kept in memory: never older than the TTL, dropped when a command changed the
cache (the index's generation), bounded in number."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.cache.recenttags import RecentTags
from proxy.model import TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex

ACCEPT = ("application/vnd.oci.image.index.v1+json",)
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def key(tag: str) -> TagKey:
    return TagKey("docker.io", "library/app", tag, ACCEPT)


def entry(checked_at: float) -> TagEntry:
    return TagEntry(Digest.of(b"manifest"), MEDIA_TYPE, 8, checked_at)


async def started(index: DiskIndex, limit: int = 10, every: float = 60) -> RecentTags:
    """Answers kept from now on: those kept before the generation was first read are dropped
    then, as a command may have changed the cache meanwhile."""
    recent = RecentTags(index, limit, every)
    assert await recent.get(key("none"), ttl=60, now=time.time()) is None
    return recent


async def test_an_answer_is_kept_until_its_ttl_is_over(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path)
    recent = await started(index)
    now = time.time()
    recent.put(key("a"), entry(now - 10))
    assert await recent.get(key("a"), ttl=60, now=now) == entry(now - 10)
    assert await recent.get(key("b"), ttl=60, now=now) is None
    assert await recent.get(key("a"), ttl=60, now=now + 50) is None
    assert await recent.get(key("a"), ttl=60, now=now) is None  # dropped when found too old
    await index.close()


async def test_a_command_that_changed_the_cache_drops_every_answer(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path)
    recent = await started(index, every=0)
    now = time.time()
    recent.put(key("a"), entry(now))
    assert await recent.get(key("a"), ttl=60, now=now) is not None
    beside = DiskIndex(tmp_path)  # as ``regcache rm`` does, closing the cache it changed
    await beside.bump_generation()
    await beside.close()
    assert await recent.get(key("a"), ttl=60, now=now) is None
    recent.put(key("a"), entry(now))
    assert await recent.get(key("a"), ttl=60, now=now) is not None
    await index.close()


async def test_the_least_recently_used_answers_go_past_the_bound(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path)
    recent = await started(index, limit=2)
    now = time.time()
    recent.put(key("a"), entry(now))
    recent.put(key("b"), entry(now))
    assert await recent.get(key("a"), ttl=60, now=now) is not None
    recent.put(key("c"), entry(now))
    assert await recent.get(key("b"), ttl=60, now=now) is None
    assert await recent.get(key("a"), ttl=60, now=now) is not None
    assert await recent.get(key("c"), ttl=60, now=now) is not None
    await index.close()


async def test_forgotten_is_gone(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path)
    recent = await started(index)
    recent.put(key("a"), entry(time.time()))
    recent.forget(key("a"))
    assert await recent.get(key("a"), ttl=60, now=time.time()) is None
    await index.close()
