"""What warm reads from a manifest before fetching: descriptors with sizes and platforms."""

from __future__ import annotations

import json

import pytest

from proxy.oci.contents import Content, InvalidPlatform, Platform, contents
from proxy.oci.digest import Digest

A, B = (Digest.parse("sha256:" + c * 64) for c in "ab")


def test_platforms_parse_and_match() -> None:
    arm = Platform.parse("linux/arm64")
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    assert arm.matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm64/v7").matches(Platform("linux", "arm64", "v8"))
    assert not arm.matches(None)
    for text in ("linux", "linux/", "/amd64", "a/b/c/d"):
        with pytest.raises(InvalidPlatform):
            Platform.parse(text)


def test_an_index_names_its_platforms_and_a_manifest_its_blobs() -> None:
    index = {
        "manifests": [
            {"digest": str(A), "size": 9, "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    }
    assert contents(json.dumps(index).encode()).manifests == (
        Content(A, 9, Platform("linux", "amd64")),
    )
    manifest = {"config": {"digest": str(A), "size": 3}, "layers": [{"digest": str(B)}, "junk"]}
    found = contents(json.dumps(manifest).encode())
    assert found.blobs == (Content(A, 3), Content(B, None))
    assert not found.is_index


def test_a_docker_schema_1_manifest_names_its_layers_without_sizes() -> None:
    manifest = {"schemaVersion": 1, "fsLayers": [{"blobSum": str(A)}, {"blobSum": str(B)}]}
    assert contents(json.dumps(manifest).encode()).blobs == (Content(A, None), Content(B, None))


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"layers": [{"digest": 7}]}'])
def test_what_is_not_a_manifest_names_nothing(body: bytes) -> None:
    assert contents(body).blobs == ()
