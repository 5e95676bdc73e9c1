"""The blob store conformance suite, continued: the total size and listing of what is stored,
and what reopening a store finds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.oci.digest import Digest
from proxy.store import BlobStore, BlobWriter
from tests.store import blobstores
from tests.store.blobstores import (
    CONFIG,
    LAYER,
    Implementation,
    Leftovers,
    put,
    stored_bytes,
    stored_digests,
)

# The suite's fixtures, by name in this module, where pytest looks for them.
implementation = blobstores.implementation
store = blobstores.store
leftovers = blobstores.leftovers


# --- accounting -----------------------------------------------------------------------


async def test_total_size_tracks_commits_and_deletes(store: BlobStore) -> None:
    assert await store.total_size() == 0
    layer = await put(store, LAYER)
    config = await put(store, CONFIG)
    assert await store.total_size() == len(LAYER) + len(CONFIG)
    await put(store, CONFIG)  # the same digest again counts once
    assert await store.total_size() == len(LAYER) + len(CONFIG)
    assert await store.delete(layer) is True
    assert await store.total_size() == len(CONFIG)
    assert await store.size(layer) is None
    assert await store.delete(layer) is False
    assert await store.total_size() == len(CONFIG)
    assert await store.delete(config) is True
    assert await store.total_size() == 0


async def test_concurrent_commits_of_one_digest_count_once(store: BlobStore) -> None:
    """Two processes (or two upstreams) may fetch the same blob at once."""
    for _ in range(10):
        writers: list[BlobWriter] = []
        for _ in range(4):
            writer = await store.writer(Digest.of(LAYER))
            await writer.write(LAYER)
            writers.append(writer)
        await asyncio.gather(*(writer.commit() for writer in writers))
        assert await store.total_size() == len(LAYER)
        assert await store.delete(Digest.of(LAYER)) is True
        assert await store.total_size() == 0


async def test_digests_lists_what_is_stored(store: BlobStore) -> None:
    assert await stored_digests(store) == set()
    layer, config = await put(store, LAYER), await put(store, CONFIG)
    empty = await put(store, b"")
    assert await stored_digests(store) == {layer, config, empty}
    await store.delete(config)
    assert await stored_digests(store) == {layer, empty}


# --- reopening ------------------------------------------------------------------------


async def test_reopening_keeps_blobs_and_recomputes_the_total(
    store: BlobStore, implementation: Implementation, tmp_path: Path
) -> None:
    layer, config = await put(store, LAYER), await put(store, CONFIG)
    await store.delete(config)
    reopened = await implementation.open(tmp_path)
    assert await reopened.total_size() == len(LAYER)
    assert await reopened.size(layer) == len(LAYER)
    assert await reopened.size(config) is None
    assert await stored_digests(reopened) == {layer}
    assert await stored_bytes(reopened, layer) == LAYER


async def test_remeasure_counts_what_another_handle_stored_and_deleted(
    store: BlobStore, implementation: Implementation, tmp_path: Path
) -> None:
    """As a server's store after a command run beside it changed the same directory."""
    layer = await put(store, LAYER)
    other = await implementation.open(tmp_path)
    await put(other, CONFIG)
    assert await other.delete(layer) is True
    await store.remeasure()
    assert await store.total_size() == len(CONFIG)
    assert await store.delete(layer) is False
    assert await store.total_size() == len(CONFIG)


async def test_reopening_removes_interrupted_writes(
    store: BlobStore, implementation: Implementation, tmp_path: Path, leftovers: Leftovers
) -> None:
    kept = await put(store, CONFIG)
    interrupted = await store.writer(Digest.of(LAYER))
    await interrupted.write(LAYER[:500])
    reopened = await implementation.open(tmp_path)
    assert await leftovers(reopened) == []
    assert await stored_digests(reopened) == {kept}
    assert await reopened.total_size() == len(CONFIG)
    assert await reopened.size(Digest.of(LAYER)) is None
    await interrupted.abort()  # the process that owned it is gone; its cleanup finds nothing
    assert await leftovers(reopened) == []
    assert await stored_digests(reopened) == {kept}
