"""In-process replicas of one fleet (tests/fast/test_fleet_blobs_*.py): what a GET streamed,
what the replicas counted between them, and waiting until they got somewhere."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import aiohttp

from tests.fast.conftest import blob_path
from tests.support.fakeregistry import FakeRegistry
from tests.support.inproxy import InProcessRegcache


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def streamed(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, int]:
    """A GET's status, the sha256 of its body as it streamed in, and its length; a body that
    ended short (its connection closed) is hashed as far as it came."""
    hashed, length = hashlib.sha256(), 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers) as response:
            try:
                async for chunk in response.content.iter_any():
                    hashed.update(chunk)
                    length += len(chunk)
            except aiohttp.ClientPayloadError:
                pass
            return response.status, hashed.hexdigest(), length


async def total(replicas: list[InProcessRegcache], name: str, **labels: str) -> float:
    found = 0.0
    for replica in replicas:
        found += await replica.metric(name, **labels)
    return found


def full_gets(registry: FakeRegistry, digest: str) -> int:
    path = blob_path(digest)
    return sum(
        1
        for s in registry.seen
        if s.method == "GET" and s.path == path and "Range" not in s.headers
    )


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        await asyncio.sleep(0.02)


async def is_now(value: bool) -> bool:
    return value


async def all_received(replicas: list[InProcessRegcache], count: int) -> bool:
    """Whether every replica received ``count`` bytes from its peers."""
    for replica in replicas:
        if await replica.metric("regcache_peer_stream_bytes", direction="received") < count:
            return False
    return True
