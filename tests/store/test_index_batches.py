"""Batched writes of the index (usage records a flush at a time, a tag's two keys at once),
for every implementation of the conformance suite: the same records as one write apiece."""

from __future__ import annotations

from proxy.model import Kind, TagEntry
from proxy.oci.digest import Digest
from proxy.store import Index
from proxy.store.diskindex import USES_PER_TRANSACTION
from tests.store import indexes
from tests.store.indexes import APP, NGINX, manifest, tag_entry, tag_key

# The suite's fixtures, by name in this module, where pytest looks for them.
implementation = indexes.implementation
index = indexes.index


async def test_record_uses_is_record_use_of_each(index: Index) -> None:
    digests = [Digest.of(str(n).encode()) for n in range(USES_PER_TRANSACTION + 3)]
    await index.record_use(Kind.BLOB, digests[0], NGINX, 500.0)
    uses = {(Kind.BLOB, digest, NGINX): 100.0 + n for n, digest in enumerate(digests)}
    uses[(Kind.BLOB, digests[1], APP)] = 7.5
    uses[(Kind.MANIFEST, digests[1], APP)] = 8.5
    await index.record_uses(uses)
    assert await index.references(Kind.BLOB, digests[0]) == {NGINX: 500.0}  # the latest kept
    assert await index.references(Kind.BLOB, digests[1]) == {NGINX: 101.0, APP: 7.5}
    assert await index.references(Kind.MANIFEST, digests[1]) == {APP: 8.5}
    last = len(digests) - 1
    assert await index.references(Kind.BLOB, digests[last]) == {NGINX: 100.0 + last}


async def test_put_tags_puts_each(index: Index) -> None:
    one, other = tag_key("one"), tag_key("other", ("*",))
    await index.put_tags([(one, tag_entry(b"1")), (other, tag_entry(b"2"))])
    assert await index.get_tag(one) == tag_entry(b"1")
    assert await index.get_tag(other) == tag_entry(b"2")


async def test_put_manifest_tagged_puts_the_manifest_and_each_tag(index: Index) -> None:
    stored = manifest(b'{"tagged":1}')
    key = tag_key("tagged")
    entry = TagEntry(stored.digest, stored.media_type, len(stored.body), 5.0)
    await index.put_manifest_tagged(stored, [(key, entry)])
    assert await index.get_manifest(stored.digest) == stored
    assert await index.get_tag(key) == entry
    untagged = manifest(b'{"untagged":1}')
    await index.put_manifest_tagged(untagged, [])
    assert await index.get_manifest(untagged.digest) == untagged
