"""The one conformance suite for ``Index`` (ManifestStore + TagIndex + UsageRecords).

Every implementation runs every test: a new backend only adds an entry to
``IMPLEMENTATIONS``. An implementation is a factory that opens the index kept under a
directory; opening the same directory again must find what was stored (for indexes that
persist) or an empty index (for ``MemoryIndex``, which keeps nothing). ``RedisIndex`` keeps
an index per directory under a key prefix naming it, in the session's one redis-server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import diskcache
import pytest

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.oci.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from proxy.store import DigestMismatch, Index
from proxy.store.diskindex import DiskIndex
from tests.store import indexes
from tests.store.indexes import (
    APP,
    IMPLEMENTATIONS,
    INDEX_BODY,
    NGINX,
    Backend,
    Implementation,
    manifest,
    tag_entry,
    tag_key,
)

# The suite's fixtures, by name in this module, where pytest looks for them.
implementation = indexes.implementation
index = indexes.index


# --- manifests ------------------------------------------------------------------------


async def test_manifest_round_trips_byte_identical(index: Index) -> None:
    # Whitespace, key order and a trailing newline are part of what the digest covers.
    body = b'{\n  "schemaVersion": 2,\n  "z": 1, "a": "\xc3\xa9"\n}\n'
    stored = manifest(body, DOCKER_MANIFEST)
    await index.put_manifest(stored)
    got = await index.get_manifest(stored.digest)
    assert got == stored
    assert got is not None
    assert got.body == body
    assert type(got.body) is bytes
    assert got.media_type == DOCKER_MANIFEST


async def test_unknown_manifest_is_none(index: Index) -> None:
    assert await index.get_manifest(Digest.of(b"never stored")) is None
    assert await index.delete_manifest(Digest.of(b"never stored")) is False


async def test_manifests_by_sha512(index: Index) -> None:
    stored = manifest(b"{}", algorithm="sha512")
    await index.put_manifest(stored)
    assert await index.get_manifest(stored.digest) == stored
    assert await index.get_manifest(Digest.of(b"{}")) is None


async def test_put_manifest_twice_keeps_one(index: Index) -> None:
    stored = manifest(INDEX_BODY, OCI_INDEX)
    await index.put_manifest(stored)
    await index.put_manifest(stored)
    assert await index.delete_manifest(stored.digest) is True
    assert await index.get_manifest(stored.digest) is None
    assert await index.delete_manifest(stored.digest) is False


async def test_manifests_are_independent(index: Index) -> None:
    first, second = manifest(b'{"a":1}'), manifest(b'{"b":2}', DOCKER_MANIFEST_LIST)
    await index.put_manifest(first)
    await index.put_manifest(second)
    await index.delete_manifest(first.digest)
    assert await index.get_manifest(first.digest) is None
    assert await index.get_manifest(second.digest) == second


async def test_manifest_sizes_lists_what_is_stored(index: Index) -> None:
    first, second = manifest(b'{"a":1}'), manifest(b'{"bb":22}', DOCKER_MANIFEST)
    await index.put_manifest(first)
    await index.put_manifest(second)
    await index.put_tag(tag_key(), TagEntry(first.digest, OCI_MANIFEST, 7, 1.0))
    await index.record_use(Kind.MANIFEST, first.digest, RepoRef("docker.io", "a"), 1.0)
    sizes = {digest: size async for digest, size in index.manifest_sizes()}
    assert sizes == {first.digest: len(first.body), second.digest: len(second.body)}
    await index.delete_manifest(first.digest)
    assert [digest async for digest, _ in index.manifest_sizes()] == [second.digest]


async def test_large_manifest(index: Index) -> None:
    stored = manifest(b'{"pad":"' + b"x" * 4_000_000 + b'"}')
    await index.put_manifest(stored)
    assert await index.get_manifest(stored.digest) == stored


async def test_body_that_does_not_hash_to_the_digest_is_refused(index: Index) -> None:
    claimed = Digest.of(b'{"real":true}')
    forged = b'{"real":false}'
    with pytest.raises(DigestMismatch) as caught:
        await index.put_manifest(StoredManifest(claimed, OCI_MANIFEST, forged))
    assert caught.value.expected == claimed
    assert caught.value.actual == str(Digest.of(forged))
    assert caught.value.size == len(forged)
    assert await index.get_manifest(claimed) is None


async def test_refused_body_does_not_replace_the_stored_one(index: Index) -> None:
    genuine = manifest(INDEX_BODY, OCI_INDEX)
    await index.put_manifest(genuine)
    with pytest.raises(DigestMismatch):
        await index.put_manifest(StoredManifest(genuine.digest, OCI_INDEX, b"tampered"))
    assert await index.get_manifest(genuine.digest) == genuine


async def test_sha512_mismatch_is_reported_in_sha512(index: Index) -> None:
    claimed = Digest.of(b"a", "sha512")
    with pytest.raises(DigestMismatch) as caught:
        await index.put_manifest(StoredManifest(claimed, OCI_MANIFEST, b"b"))
    assert caught.value.actual == str(Digest.of(b"b", "sha512"))


# --- tags -----------------------------------------------------------------------------


async def test_tag_put_get_overwrite_delete(index: Index) -> None:
    key = tag_key()
    assert await index.get_tag(key) is None
    first = tag_entry(b"one", checked_at=1.5)
    await index.put_tag(key, first)
    assert await index.get_tag(key) == first
    second = tag_entry(b"two", checked_at=2.5)
    await index.put_tag(key, second)
    assert await index.get_tag(key) == second
    await index.delete_tag(key)
    assert await index.get_tag(key) is None
    await index.delete_tag(key)  # deleting what is not there is fine


async def test_tag_entry_fields_round_trip(index: Index) -> None:
    entry = TagEntry(Digest.of(b"x", "sha512"), DOCKER_MANIFEST, 123_456_789, 1_700_000_000.123456)
    await index.put_tag(tag_key(), entry)
    got = await index.get_tag(tag_key())
    assert got == entry
    assert got is not None
    assert isinstance(got.digest, Digest)
    assert got.checked_at == entry.checked_at


@pytest.mark.parametrize(
    "other",
    [
        TagKey("ghcr.io", "library/nginx", "latest", (OCI_INDEX, OCI_MANIFEST)),
        TagKey("docker.io", "library/redis", "latest", (OCI_INDEX, OCI_MANIFEST)),
        TagKey("docker.io", "library/nginx", "Latest", (OCI_INDEX, OCI_MANIFEST)),
        TagKey("docker.io", "library/nginx", "latest", (OCI_INDEX,)),
        TagKey("docker.io", "library/nginx", "latest", ()),
        TagKey("docker.io", "library/nginx", "latest", (OCI_INDEX, OCI_MANIFEST, "*/*")),
    ],
)
async def test_tag_keys_differing_in_one_field_are_distinct(index: Index, other: TagKey) -> None:
    key = tag_key()
    await index.put_tag(key, tag_entry(b"key"))
    assert await index.get_tag(other) is None
    await index.put_tag(other, tag_entry(b"other"))
    assert await index.get_tag(key) == tag_entry(b"key")
    await index.delete_tag(other)
    assert await index.get_tag(key) == tag_entry(b"key")


@pytest.mark.parametrize(
    ("accept", "other"),
    [
        (("application/a", "application/b"), ("application/a,application/b",)),
        ((), ("",)),
    ],
)
async def test_accept_tuples_are_not_confused_by_their_encoding(
    index: Index, accept: tuple[str, ...], other: tuple[str, ...]
) -> None:
    """The accept tuple is part of the key as a tuple, not as text that can collide."""
    await index.put_tag(tag_key(accept=accept), tag_entry(b"tuple"))
    assert await index.get_tag(tag_key(accept=other)) is None


# --- usage records --------------------------------------------------------------------


async def test_tags_lists_every_entry_and_nothing_else(index: Index) -> None:
    assert [entry async for entry in index.tags()] == []
    first, second = tag_key("1.0"), tag_key("2.0", accept=("*",))
    await index.put_tag(first, tag_entry(b"one"))
    await index.put_tag(second, tag_entry(b"two"))
    await index.put_manifest(manifest(INDEX_BODY, OCI_INDEX))
    await index.record_use(Kind.BLOB, Digest.of(b"x"), NGINX, 1.0)
    await index.put_pin("docker.io/library/nginx:1.0", frozenset({Digest.of(b"one")}))
    listed = {key: entry async for key, entry in index.tags()}
    assert listed == {first: tag_entry(b"one"), second: tag_entry(b"two")}
    await index.delete_tag(first)
    assert [key async for key, _ in index.tags()] == [second]


async def test_pins_put_replace_delete(index: Index) -> None:
    name = "docker.io/library/nginx:1.0"
    contents = frozenset({Digest.of(b"manifest"), Digest.of(b"layer")})
    assert await index.pins() == {}
    await index.put_pin(name, contents)
    await index.put_pin("ghcr.io/org/app:2", frozenset())
    assert await index.pins() == {name: contents, "ghcr.io/org/app:2": frozenset()}
    await index.put_pin(name, frozenset({Digest.of(b"layer")}))
    assert (await index.pins())[name] == frozenset({Digest.of(b"layer")})
    assert await index.delete_pin(name)
    assert not await index.delete_pin(name)
    assert await index.pins() == {"ghcr.io/org/app:2": frozenset()}


async def test_record_use_keeps_the_latest_time_per_pair(index: Index) -> None:
    digest = Digest.of(b"layer")
    await index.record_use(Kind.BLOB, digest, NGINX, 100.0)
    await index.record_use(Kind.BLOB, digest, NGINX, 300.0)
    await index.record_use(Kind.BLOB, digest, NGINX, 200.0)  # out of order: ignored
    await index.record_use(Kind.BLOB, digest, APP, 50.5)
    assert await index.references(Kind.BLOB, digest) == {NGINX: 300.0, APP: 50.5}


async def test_references_of_unknown_content_are_empty(index: Index) -> None:
    assert await index.references(Kind.MANIFEST, Digest.of(b"none")) == {}
    await index.forget(Kind.MANIFEST, Digest.of(b"none"))  # forgetting nothing is fine


async def test_forget_removes_every_pair(index: Index) -> None:
    digest, other = Digest.of(b"layer"), Digest.of(b"other")
    await index.record_use(Kind.BLOB, digest, NGINX, 1.0)
    await index.record_use(Kind.BLOB, digest, APP, 2.0)
    await index.record_use(Kind.BLOB, other, APP, 3.0)
    await index.forget(Kind.BLOB, digest)
    assert await index.references(Kind.BLOB, digest) == {}
    assert await index.references(Kind.BLOB, other) == {APP: 3.0}
    await index.record_use(Kind.BLOB, digest, NGINX, 0.5)
    assert await index.references(Kind.BLOB, digest) == {NGINX: 0.5}


async def test_blob_and_manifest_records_are_separate(index: Index) -> None:
    digest = Digest.of(b"same bytes")
    await index.record_use(Kind.BLOB, digest, NGINX, 1.0)
    await index.record_use(Kind.MANIFEST, digest, APP, 2.0)
    assert await index.references(Kind.BLOB, digest) == {NGINX: 1.0}
    assert await index.references(Kind.MANIFEST, digest) == {APP: 2.0}
    await index.forget(Kind.MANIFEST, digest)
    assert await index.references(Kind.BLOB, digest) == {NGINX: 1.0}
    assert await index.references(Kind.MANIFEST, digest) == {}


async def test_pairs_differ_by_upstream_and_by_repository(index: Index) -> None:
    digest = Digest.of(b"layer")
    refs = [
        RepoRef("docker.io", "a/b"),
        RepoRef("ghcr.io", "a/b"),
        RepoRef("docker.io", "a"),
        RepoRef("docker.io/a", "b"),  # never confused with ("docker.io", "a/b")
    ]
    for when, ref in enumerate(refs):
        await index.record_use(Kind.BLOB, digest, ref, float(when))
    assert await index.references(Kind.BLOB, digest) == {
        ref: float(i) for i, ref in enumerate(refs)
    }


async def test_references_returns_a_copy(index: Index) -> None:
    digest = Digest.of(b"layer")
    await index.record_use(Kind.BLOB, digest, NGINX, 1.0)
    returned = await index.references(Kind.BLOB, digest)
    returned[APP] = 99.0
    returned[NGINX] = 99.0
    assert await index.references(Kind.BLOB, digest) == {NGINX: 1.0}


async def test_concurrent_record_use_loses_nothing(index: Index) -> None:
    digest = Digest.of(b"popular layer")
    refs = [RepoRef("docker.io", f"user/app{i}") for i in range(20)]
    await asyncio.gather(
        *(index.record_use(Kind.BLOB, digest, ref, float(i)) for i, ref in enumerate(refs))
    )
    assert await index.references(Kind.BLOB, digest) == {
        ref: float(i) for i, ref in enumerate(refs)
    }


# --- the change counter -----------------------------------------------------------------


async def test_generation_starts_at_zero_and_each_bump_adds_one(index: Index) -> None:
    assert await index.generation() == 0
    assert await index.bump_generation() == 1
    assert await index.bump_generation() == 2
    assert await index.generation() == 2


async def test_generation_is_not_moved_by_other_writes(index: Index) -> None:
    # The server's own writes must not look like another process's changes to it.
    await index.put_manifest(manifest(INDEX_BODY, OCI_INDEX))
    await index.record_use(Kind.BLOB, Digest.of(b"layer"), NGINX, 1.0)
    await index.delete_manifest(Digest.of(INDEX_BODY))
    assert await index.generation() == 0


async def test_concurrent_bumps_lose_nothing(index: Index) -> None:
    await asyncio.gather(*(index.bump_generation() for _ in range(20)))
    assert await index.generation() == 20


# Only an index kept outside the process can be opened twice.
SHARED = [param for param in IMPLEMENTATIONS if param.values[0].persistent]  # type: ignore[union-attr]


@pytest.mark.parametrize("shared", SHARED)
async def test_a_bump_is_seen_by_another_handle_at_once(
    shared: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As a command beside a running server bumps it: both have the index open."""
    opened = shared.implementation(request)
    server, command = await opened.open(tmp_path), await opened.open(tmp_path)
    try:
        before = await server.generation()
        await command.bump_generation()
        await command.bump_generation()
        assert await server.generation() == before + 2
    finally:
        await command.close()
        await server.close()


# --- persistence ----------------------------------------------------------------------


async def test_reopening(implementation: Implementation, tmp_path: Path) -> None:
    stored = manifest(INDEX_BODY, OCI_INDEX)
    digest = Digest.of(b"layer")
    first = await implementation.open(tmp_path)
    await first.put_manifest(stored)
    await first.put_tag(tag_key(), tag_entry(INDEX_BODY))
    await first.record_use(Kind.BLOB, digest, NGINX, 42.0)
    await first.put_pin("pinned", frozenset({digest}))
    await first.bump_generation()
    await first.close()

    second = await implementation.open(tmp_path)
    try:
        if implementation.persistent:
            assert await second.get_manifest(stored.digest) == stored
            assert await second.get_tag(tag_key()) == tag_entry(INDEX_BODY)
            assert await second.references(Kind.BLOB, digest) == {NGINX: 42.0}
            assert await second.pins() == {"pinned": frozenset({digest})}
            assert [key async for key, _ in second.tags()] == [tag_key()]
            assert await second.generation() == 1
        else:
            assert await second.get_manifest(stored.digest) is None
            assert await second.get_tag(tag_key()) is None
            assert await second.references(Kind.BLOB, digest) == {}
    finally:
        await second.close()


async def test_disk_index_never_evicts(tmp_path: Path) -> None:
    """The index is the record of what the cache holds; it must not drop entries by itself.

    diskcache's default is to cull the least recently stored entries once the directory
    passes 1 GiB, which would silently lose tags, manifests and usage records.
    """
    index = DiskIndex(tmp_path / "index")
    await index.close()
    with diskcache.Cache(str(tmp_path / "index")) as cache:
        assert cache.eviction_policy == "none"
