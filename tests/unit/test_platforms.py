"""Platforms of an image from its index or its config: pure, and tolerant of junk."""

from __future__ import annotations

import json

import pytest

from proxy.oci.contents import Content, Platform, config_platform, contents
from proxy.oci.digest import Digest

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
    assert contents(body).manifests == (
        Content(Digest.parse(D1), None, Platform("linux", "arm", "v7")),
        Content(Digest.parse(D2), None, Platform("unknown", "unknown")),
        Content(Digest.parse(D2), None),
    )
    assert [c.platform.is_image for c in contents(body).manifests if c.platform] == [True, False]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"layers": []}'])
def test_anything_else_is_not_an_index(body: bytes) -> None:
    assert not contents(body).is_index


def test_a_config_names_its_platform_and_a_manifest_its_config() -> None:
    amd64 = Platform("linux", "amd64")
    assert config_platform(b'{"os": "linux", "architecture": "amd64"}') == amd64
    assert config_platform(b'{"os": "linux"}') is None
    assert config_platform(b"junk") is None
    config = contents(json.dumps({"config": {"digest": D1}}).encode()).config
    assert config == Content(Digest.parse(D1), None)
    assert contents(b'{"config": {"digest": "sha256:bad"}}').config is None
    assert contents(b'{"manifests": []}').config is None


@pytest.mark.parametrize(
    ("platform", "wanted", "result"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/arm64", "linux/arm64/v8", False),
        ("linux/arm", "linux/arm64", False),
        (None, "linux/amd64", False),
    ],
)
def test_matching_a_platform(platform: str | None, wanted: str, result: bool) -> None:
    entry = Platform.parse(platform) if platform is not None else None
    assert Platform.parse(wanted).matches(entry) is result
