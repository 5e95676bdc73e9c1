"""Tag answers kept in memory: never older than the TTL, dropped when a command changed the
cache (the index's generation), bounded in number."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.recenttags import RecentTags
from proxy.model import TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex

ACCEPT = ("application/vnd.oci.image.index.v1+json",)
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TTL = 60.0


def key(tag: str) -> TagKey:
    return TagKey("docker.io", "library/app", tag, ACCEPT)


def entry(checked_at: float) -> TagEntry:
    return TagEntry(Digest.of(b"manifest"), MEDIA_TYPE, 8, checked_at)


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[DiskIndex]:
    index = DiskIndex(tmp_path)
    yield index
    await index.close()


async def started(index: DiskIndex, limit: int = 10, every: float = 60) -> RecentTags:
    """Answers kept from now on: those kept before the generation was first read are dropped
    then, as a command may have changed the cache meanwhile."""
    recent = RecentTags(index, limit, every)
    assert not await kept(recent, "none")
    return recent


async def kept(recent: RecentTags, tag: str, now: float | None = None) -> bool:
    return await recent.get(key(tag), TTL, time.time() if now is None else now) is not None


async def test_an_answer_is_kept_until_its_ttl_is_over(index: DiskIndex) -> None:
    recent = await started(index)
    now = time.time()
    recent.put(key("a"), entry(now - 10))
    assert await recent.get(key("a"), TTL, now) == entry(now - 10)
    assert not await kept(recent, "b", now)
    assert not await kept(recent, "a", now + 50)
    assert not await kept(recent, "a", now)  # dropped when found too old


async def test_a_command_that_changed_the_cache_drops_every_answer(
    index: DiskIndex, tmp_path: Path
) -> None:
    recent = await started(index, every=0)
    recent.put(key("a"), entry(time.time()))
    assert await kept(recent, "a")
    beside = DiskIndex(tmp_path)  # as ``regcache rm`` does, closing the cache it changed
    await beside.bump_generation()
    await beside.close()
    assert not await kept(recent, "a")
    recent.put(key("a"), entry(time.time()))
    assert await kept(recent, "a")


async def test_the_least_recently_used_answers_go_past_the_bound(index: DiskIndex) -> None:
    recent = await started(index, limit=2)
    for tag in ("a", "b"):
        recent.put(key(tag), entry(time.time()))
    assert await kept(recent, "a")
    recent.put(key("c"), entry(time.time()))
    assert [await kept(recent, tag) for tag in ("a", "b", "c")] == [True, False, True]


async def test_forgotten_is_gone(index: DiskIndex) -> None:
    recent = await started(index)
    recent.put(key("a"), entry(time.time()))
    recent.forget(key("a"))
    assert not await kept(recent, "a")
