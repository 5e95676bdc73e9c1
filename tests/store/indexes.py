"""The indexes the conformance suite runs on, its fixtures and its helpers: a new backend only
adds an entry to ``IMPLEMENTATIONS``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.model import RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from proxy.store import Index
from proxy.store.diskindex import DiskIndex
from proxy.store.memory import MemoryIndex
from proxy.store.redisindex import RedisIndex
from tests.support.redisserver import RedisServer

Opener = Callable[[Path], Awaitable[Index]]


@dataclass(frozen=True)
class Implementation:
    open: Opener
    persistent: bool


@dataclass(frozen=True)
class Backend:
    """An implementation before a test asks for it: one that needs a server gets it from
    the test's fixtures (``opener``, given the test's request)."""

    opener: Callable[[pytest.FixtureRequest], Opener]
    persistent: bool

    def implementation(self, request: pytest.FixtureRequest) -> Implementation:
        return Implementation(self.opener(request), self.persistent)


async def open_memory(directory: Path) -> Index:
    return MemoryIndex()


async def open_disk(directory: Path) -> Index:
    return DiskIndex(directory / "index")


def redis_opener(request: pytest.FixtureRequest) -> Opener:
    server: RedisServer = request.getfixturevalue("redis_server")

    async def open_redis(directory: Path) -> Index:
        return RedisIndex(server.url, prefix=f"regcache-test:{directory}:")

    return open_redis


IMPLEMENTATIONS = [
    pytest.param(Backend(lambda _: open_memory, persistent=False), id="memory"),
    pytest.param(Backend(lambda _: open_disk, persistent=True), id="disk"),
    pytest.param(Backend(redis_opener, persistent=True), id="redis"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    backend: Backend = request.param
    return backend.implementation(request)


@pytest.fixture
async def index(implementation: Implementation, tmp_path: Path) -> AsyncIterator[Index]:
    opened = await implementation.open(tmp_path)
    yield opened
    await opened.close()


def manifest(
    body: bytes, media_type: str = OCI_MANIFEST, algorithm: str = "sha256"
) -> StoredManifest:
    return StoredManifest(Digest.of(body, algorithm), media_type, body)


def tag_key(tag: str = "latest", accept: tuple[str, ...] = (OCI_INDEX, OCI_MANIFEST)) -> TagKey:
    return TagKey("docker.io", "library/nginx", tag, accept)


def tag_entry(body: bytes = b"{}", checked_at: float = 1_700_000_000.25) -> TagEntry:
    return TagEntry(Digest.of(body), OCI_INDEX, len(body), checked_at)


INDEX_BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}'
NGINX = RepoRef("docker.io", "library/nginx")
APP = RepoRef("ghcr.io", "org/app")
