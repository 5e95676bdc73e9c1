"""Small blobs are put in place without an fsync (fsblobs.SMALL_BLOB): what a crash tore is
found when the blob is opened, and fetched again from the upstream; never served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.store.fsblobs import SMALL_BLOB
from tests.fast.conftest import blob_path
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache


def zeroed(path: Path) -> None:
    """What a crash may leave of a file whose blocks never reached the disk: its length in
    zeros, or nothing."""
    path.write_bytes(bytes(path.stat().st_size))


def emptied(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("tear", [zeroed, emptied])
async def test_a_torn_small_blob_is_fetched_again_not_served(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage, tear: object
) -> None:
    digest, layer = image.layer_digests[0], image.layers[0]
    assert len(layer) <= SMALL_BLOB
    assert (await regcache.get(blob_path(digest))).body == layer
    [stored] = regcache.files("blobs")
    assert callable(tear)
    await asyncio.to_thread(tear, stored)
    again = await regcache.get(blob_path(digest))
    assert again.status == 200
    assert again.body == layer
    assert registry.count("GET", blob_path(digest)) == 2
    assert await asyncio.to_thread(stored.read_bytes) == layer
    # Stored whole again: the next request is a hit.
    assert (await regcache.get(blob_path(digest))).body == layer
    assert registry.count("GET", blob_path(digest)) == 2
