"""Platforms of an image from its index or its config: pure, and tolerant of junk."""

from __future__ import annotations

import json

import pytest

from proxy.oci.digest import Digest
from proxy.oci.platforms import Child, config_digest, config_platform, index_children, matches

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_an_index_lists_its_children_with_their_platforms() -> None:
    body = json.dumps(
        {
            "manifests": [
                {"digest": D1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"digest": D2, "platform": {"os": "unknown", "architecture": "unknown"}},
                {"digest": D2},
                {"digest": "sha256:short"},
                {"platform": {"os": "linux"}},
                "junk",
            ]
        }
    ).encode()
    assert index_children(body) == [
        Child(Digest.parse(D1), "linux/arm/v7"),
        Child(Digest.parse(D2), "unknown/unknown"),
        Child(Digest.parse(D2), ""),
    ]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"layers": []}'])
def test_anything_else_is_not_an_index(body: bytes) -> None:
    assert index_children(body) is None


def test_a_config_names_its_platform_and_a_manifest_its_config() -> None:
    assert config_platform(b'{"os": "linux", "architecture": "amd64"}') == "linux/amd64"
    assert config_platform(b'{"os": "linux"}') == ""
    assert config_platform(b"junk") == ""
    assert config_digest(json.dumps({"config": {"digest": D1}}).encode()) == Digest.parse(D1)
    assert config_digest(b'{"config": {"digest": "sha256:bad"}}') is None
    assert config_digest(b'{"manifests": []}') is None


@pytest.mark.parametrize(
    ("platform", "wanted", "result"),
    [
        ("linux/amd64", (), True),
        ("linux/amd64", ("linux/amd64",), True),
        ("linux/arm64/v8", ("linux/arm64",), True),
        ("linux/arm64", ("linux/arm64/v8",), False),
        ("linux/arm", ("linux/arm64",), False),
        ("", ("linux/amd64",), False),
    ],
)
def test_matching_a_platform(platform: str, wanted: tuple[str, ...], result: bool) -> None:
    assert matches(platform, wanted) is result
