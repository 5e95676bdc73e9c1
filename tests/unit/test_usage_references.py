"""Which repositories reference what: known at once in the process that learned it, and
through the index to every process sharing it."""

from __future__ import annotations

import json

import pytest

import proxy.cache.usage
from proxy.cache.usage import PullCounter, Usage
from proxy.metrics import Metrics
from proxy.model import Kind, RepoRef, StoredManifest
from proxy.oci.digest import Digest
from proxy.store.memory import MemoryIndex

LAYER = Digest.of(b"layer")
MINE = RepoRef("docker.io", "acme/private")
OTHER = RepoRef("docker.io", "library/public")
ELSEWHERE = RepoRef("mirror.example.com", "acme/private")


async def test_a_reference_is_known_at_once_and_to_other_processes_after_a_flush() -> None:
    index = MemoryIndex()
    here, there = Usage(index, Metrics()), Usage(index, Metrics())
    here.learn(Kind.BLOB, LAYER, MINE)
    assert await here.known(Kind.BLOB, LAYER, MINE)
    assert not await there.known(Kind.BLOB, LAYER, MINE)
    await here.flush()
    assert await there.known(Kind.BLOB, LAYER, MINE)
    for ref in (OTHER, ELSEWHERE):
        assert not await here.known(Kind.BLOB, LAYER, ref)
    assert not await here.known(Kind.MANIFEST, LAYER, MINE)


async def test_past_the_memory_bound_the_pending_batch_and_the_index_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy.cache.usage, "MAX_KNOWN", 2)
    usage = Usage(MemoryIndex(), Metrics())
    digests = [Digest.of(bytes([n])) for n in range(5)]
    for digest in digests:
        usage.learn(Kind.BLOB, digest, MINE)
    assert all([await usage.known(Kind.BLOB, d, MINE) for d in digests])  # pending
    await usage.flush()
    assert all([await usage.known(Kind.BLOB, d, MINE) for d in digests])  # index


async def test_a_manifest_served_to_a_repository_vouches_for_what_it_lists() -> None:
    usage = Usage(MemoryIndex(), Metrics())
    body = json.dumps({"layers": [{"digest": str(LAYER)}]}).encode()
    usage.learn_manifest(StoredManifest(Digest.of(body), "x", body), MINE)
    assert await usage.known(Kind.BLOB, LAYER, MINE)
    assert not await usage.known(Kind.BLOB, LAYER, OTHER)


def test_pulls_are_counted_for_a_bounded_number_of_repositories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy.cache.usage, "MAX_COUNTED", 3)
    pulls = PullCounter()
    for _ in range(5):
        pulls.pulled(MINE)
    for n in range(100):
        pulls.pulled(RepoRef("docker.io", f"once/{n}"))
    assert len(pulls._counts) <= 6
    assert pulls.top(1) == [(MINE, 5)]
