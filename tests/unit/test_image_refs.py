"""Image references as the cache-directory commands take them."""

from __future__ import annotations

import pytest

from proxy.config import Config
from proxy.oci.imageref import InvalidImage, parse_image
from proxy.routing import Router

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("docker.io/alpine:3.20", "docker.io/library/alpine:3.20"),
        ("docker.io/alpine", "docker.io/library/alpine:latest"),
        ("docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20"),
        ("ghcr.io/acme/app/tool:v1.2", "ghcr.io/acme/app/tool:v1.2"),
        (f"quay.io/org/app@{DIGEST}", f"quay.io/org/app@{DIGEST}"),
    ],
)
def test_a_full_reference_names_one_image(text: str, canonical: str) -> None:
    target, reference = Router(Config()).route_image(text)
    assert target.image(reference) == canonical


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("alpine:3.20", "name the registry"),
        ("docker.io/", "name the registry"),
        ("docker.io/Alpine:1", "lowercase"),
        ("docker.io/alpine:bad tag", "tag"),
        (f"docker.io/alpine:1@{DIGEST}", "a tag and a digest"),
        ("docker.io/alpine@sha256:short", "digest"),
        ("example.com/app:1", "no upstream is named 'example.com'"),
    ],
)
def test_a_bad_reference_says_why(text: str, why: str) -> None:
    with pytest.raises(InvalidImage) as info:
        Router(Config()).route_image(text)
    assert why in str(info.value)


def test_parsing_is_pure() -> None:
    image = parse_image("gh/acme/app:1")
    assert (image.registry, image.name, str(image.reference)) == ("gh", "acme/app", "1")
