"""The index conformance suite, continued: random operations on every index, checked against
a model of what it must answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from proxy.store import Index
from tests.store import indexes
from tests.store.indexes import Implementation, manifest

# The suite's fixtures, by name in this module, where pytest looks for them.
implementation = indexes.implementation
index = indexes.index


# --- against a model ------------------------------------------------------------------

DIGEST_POOL = [Digest.of(bytes([i])) for i in range(3)]
MANIFEST_POOL = [
    manifest(bytes([i]), media) for i in range(3) for media in (OCI_INDEX, OCI_MANIFEST)
]
_times = st.floats(0, 2e9, allow_nan=False)
_digests = st.sampled_from(DIGEST_POOL)
_tag_keys = st.builds(
    TagKey,
    st.sampled_from(["docker.io", "ghcr.io"]),
    st.sampled_from(["library/nginx", "org/app"]),
    st.sampled_from(["latest", "v1"]),
    st.sampled_from([(), (OCI_INDEX,), (OCI_INDEX, OCI_MANIFEST), (DOCKER_MANIFEST,)]),
)
_tag_entries = st.builds(
    TagEntry, _digests, st.sampled_from([OCI_INDEX, DOCKER_MANIFEST]), st.integers(0, 10**9), _times
)
_refs = st.builds(RepoRef, st.sampled_from(["docker.io", "ghcr.io"]), st.sampled_from(["a", "a/b"]))
_kinds = st.sampled_from(Kind)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put_manifest"), st.sampled_from(MANIFEST_POOL)),
        st.tuples(st.just("delete_manifest"), _digests),
        st.tuples(st.just("put_tag"), _tag_keys, _tag_entries),
        st.tuples(st.just("delete_tag"), _tag_keys),
        st.tuples(st.just("record_use"), _kinds, _digests, _refs, _times),
        st.tuples(st.just("forget"), _kinds, _digests),
    ),
    max_size=25,
)


async def check_against_model(index: Index, ops: list[tuple[Any, ...]]) -> None:
    """Apply ``ops`` to ``index`` and to plain dicts; every answer must agree."""
    manifests: dict[Digest, StoredManifest] = {}
    tags: dict[TagKey, TagEntry | None] = {}
    uses: dict[tuple[Kind, Digest], dict[RepoRef, float]] = {}
    for op, *args in ops:
        if op == "put_manifest":
            await index.put_manifest(args[0])
            manifests[args[0].digest] = args[0]
        elif op == "delete_manifest":
            existed = manifests.pop(args[0], None) is not None
            assert await index.delete_manifest(args[0]) == existed
        elif op == "put_tag":
            await index.put_tag(args[0], args[1])
            tags[args[0]] = args[1]
        elif op == "delete_tag":
            await index.delete_tag(args[0])
            tags[args[0]] = None
        elif op == "record_use":
            kind, digest, ref, when = args
            await index.record_use(kind, digest, ref, when)
            pairs = uses.setdefault((kind, digest), {})
            pairs[ref] = max(when, pairs.get(ref, when))
        else:
            kind, digest = args
            await index.forget(kind, digest)
            uses.pop((kind, digest), None)
    for digest in DIGEST_POOL + [m.digest for m in MANIFEST_POOL]:
        assert await index.get_manifest(digest) == manifests.get(digest)
    for key, entry in tags.items():
        assert await index.get_tag(key) == entry
    for kind in Kind:
        for digest in DIGEST_POOL:
            assert await index.references(kind, digest) == uses.get((kind, digest), {})


@settings(
    max_examples=25,
    deadline=None,
    # The fixture only picks the implementation, which is immutable.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_behaves_like_the_model(
    implementation: Implementation,
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[Any, ...]],
) -> None:
    async def scenario() -> None:
        index = await implementation.open(tmp_path_factory.mktemp("model"))
        try:
            await check_against_model(index, ops)
        finally:
            await index.close()

    asyncio.run(scenario())
