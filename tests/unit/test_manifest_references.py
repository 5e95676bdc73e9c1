"""What a manifest references: descriptors of every manifest kind, and nothing for junk."""

from __future__ import annotations

import json

import pytest

from proxy.oci.digest import Digest
from proxy.oci.manifest import MAX_REFERENCES, ManifestReferences, references

A, B, C, D = (Digest.of(bytes([n])) for n in range(4))


def descriptor(digest: Digest) -> dict[str, object]:
    return {"mediaType": "x", "digest": str(digest), "size": 1}


def test_an_image_manifest_references_its_config_and_layers() -> None:
    body = {"config": descriptor(A), "layers": [descriptor(B), descriptor(C)]}
    assert references(json.dumps(body).encode()) == ManifestReferences((A, B, C), ())


def test_an_index_references_its_manifests() -> None:
    body = {"manifests": [descriptor(A), descriptor(B)]}
    assert references(json.dumps(body).encode()) == ManifestReferences((), (A, B))


def test_an_artifact_references_its_blobs_and_subject() -> None:
    body = {"blobs": [descriptor(A)], "subject": descriptor(B), "config": descriptor(C)}
    assert references(json.dumps(body).encode()) == ManifestReferences((C, A), (B,))


def test_a_schema1_manifest_references_its_fs_layers() -> None:
    body = {"fsLayers": [{"blobSum": str(A)}, {"blobSum": str(A)}]}
    assert references(json.dumps(body).encode()).blobs == (A, A)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b'{"layers": "nope", "config": 3, "manifests": {"digest": "x"}}',
        b'{"layers": [1, null, {"digest": 5}, {"digest": "sha256:short"}, {"digest": "md5:ab"}]}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_junk_references_nothing(body: bytes) -> None:
    assert references(body) == ManifestReferences()


def test_junk_descriptors_are_skipped_and_good_ones_kept() -> None:
    body = {"layers": [{"digest": "bad"}, descriptor(D)]}
    assert references(json.dumps(body).encode()).blobs == (D,)


def test_the_references_of_one_manifest_are_bounded() -> None:
    body = {"layers": [descriptor(A)] * (MAX_REFERENCES + 10), "config": descriptor(B)}
    found = references(json.dumps(body).encode())
    assert len(found.blobs) == MAX_REFERENCES
