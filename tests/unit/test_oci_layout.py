"""The OCI layout's index.json and blob paths, as a bundle carries them."""

from __future__ import annotations

import json

import pytest

from proxy.oci.digest import Digest
from proxy.oci.layout import (
    CONTAINERD_NAME,
    REF_NAME,
    InvalidLayout,
    LayoutImage,
    blob_digest,
    blob_path,
    index_document,
    parse_index,
)

DIGEST = Digest.parse("sha256:" + "ab" * 32)
TYPE = "application/vnd.oci.image.manifest.v1+json"


def test_an_index_names_each_image_for_containerd_and_for_oci_tools() -> None:
    body = index_document([("docker.io/library/a:1", LayoutImage(DIGEST, TYPE, 10, None))])
    (image,) = parse_index(body)
    assert image == LayoutImage(DIGEST, TYPE, 10, "docker.io/library/a:1")
    annotations = json.loads(body)["manifests"][0]["annotations"]
    assert annotations == {
        CONTAINERD_NAME: "docker.io/library/a:1",
        REF_NAME: "docker.io/library/a:1",
    }


def test_the_containerd_name_wins_over_the_oci_ref_name() -> None:
    entry = {"mediaType": TYPE, "digest": str(DIGEST), "size": 1}
    named = {**entry, "annotations": {REF_NAME: "1.0", CONTAINERD_NAME: "docker.io/x:1.0"}}
    body = json.dumps({"manifests": [named, {**entry, "annotations": {REF_NAME: "2"}}, entry]})
    assert [image.name for image in parse_index(body.encode())] == ["docker.io/x:1.0", "2", None]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "not JSON"),
        (b"[]", "no manifests list"),
        (b'{"manifests": [1]}', r"manifests\[0\] is not a descriptor"),
        (b'{"manifests": [{"mediaType": "x", "size": 1}]}', "lacks a mediaType, size or digest"),
        (b'{"manifests": [{"mediaType": "x", "size": 1, "digest": "md5:1"}]}', "unsupported"),
    ],
)
def test_a_broken_index_is_named(body: bytes, says: str) -> None:
    with pytest.raises(InvalidLayout, match=says):
        parse_index(body)


def test_blob_paths() -> None:
    assert blob_digest(blob_path(DIGEST)) == DIGEST
    assert blob_digest(f"./blobs/sha256/{DIGEST.hex}") == DIGEST
    assert blob_digest("manifest.json") is None
    with pytest.raises(InvalidLayout, match="blobs/sha256/xyz"):
        blob_digest("blobs/sha256/xyz")
