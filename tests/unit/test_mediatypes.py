"""Accept headers reduced to the tuple of media types that keys the tag index."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    accepted_types,
)

# What `docker pull` sends, one header line per type.
DOCKER_ACCEPT = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
]

media_types = st.builds(
    "{}/{}".format,
    st.sampled_from(["application", "text", "image", "*"]),
    st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,30}", fullmatch=True),
)


def test_docker_pull_headers() -> None:
    assert accepted_types(DOCKER_ACCEPT) == tuple(
        sorted([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST])
    )


def test_one_line_with_commas_equals_many_lines() -> None:
    assert accepted_types([", ".join(DOCKER_ACCEPT)]) == accepted_types(DOCKER_ACCEPT)


def test_no_header_is_the_empty_tuple() -> None:
    assert accepted_types([]) == ()
    assert accepted_types([""]) == ()
    assert accepted_types([" , ,, ;q=1"]) == ()


@pytest.mark.parametrize(
    "lines",
    [
        [f"{OCI_INDEX};q=0.9"],
        [f"{OCI_INDEX} ; q=0.5; charset=utf-8"],
        [f"  {OCI_INDEX}\t"],
        [OCI_INDEX.upper()],
        ["Application/Vnd.OCI.Image.Index.v1+JSON"],
        [OCI_INDEX, OCI_INDEX, f"{OCI_INDEX}, {OCI_INDEX};q=0.1"],
    ],
)
def test_parameters_whitespace_case_and_repeats_are_ignored(lines: list[str]) -> None:
    assert accepted_types(lines) == (OCI_INDEX,)


def test_result_is_sorted() -> None:
    assert accepted_types(["b/b, a/a", "c/c"]) == ("a/a", "b/b", "c/c")


def test_wildcards_are_kept() -> None:
    assert accepted_types(["*/*"]) == ("*/*",)


def test_accepts_any_iterable() -> None:
    assert accepted_types(iter(DOCKER_ACCEPT)) == accepted_types(DOCKER_ACCEPT)


# --- properties -----------------------------------------------------------------------


def render(types: list[str], params: list[str], spaces: list[str], upper: list[bool]) -> list[str]:
    """Accept header items for ``types``, dressed up with parameters, whitespace and case."""
    items = []
    for index, media_type in enumerate(types):
        text = media_type.upper() if upper[index % len(upper)] else media_type
        space = spaces[index % len(spaces)]
        param = params[index % len(params)]
        items.append(f"{space}{text}{space}{param}")
    return items


@given(
    st.lists(media_types, min_size=1, max_size=8),
    st.lists(st.sampled_from(["", ";q=0.9", "; q=1", ";charset=utf-8;q=0"]), min_size=1),
    st.lists(st.sampled_from(["", " ", "\t", "  "]), min_size=1),
    st.lists(st.booleans(), min_size=1),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=4),
)
def test_only_the_set_of_types_matters(
    types: list[str],
    params: list[str],
    spaces: list[str],
    upper: list[bool],
    shuffler: random.Random,
    lines: int,
) -> None:
    expected = tuple(sorted(set(types)))
    items = render(types, params, spaces, upper)
    shuffler.shuffle(items)
    # However the items are spread over header lines.
    spread = [", ".join(items[start::lines]) for start in range(lines)]
    assert accepted_types(spread) == expected


@given(st.lists(st.text()))
def test_result_is_a_canonical_set_for_any_input(lines: list[str]) -> None:
    result = accepted_types(lines)
    assert list(result) == sorted(set(result))
    for media_type in result:
        assert media_type
        assert media_type == media_type.strip()
        assert media_type == media_type.lower()
        assert "," not in media_type
        assert ";" not in media_type


@given(st.lists(st.text()))
def test_idempotent(lines: list[str]) -> None:
    once = accepted_types(lines)
    assert accepted_types([", ".join(once)]) == once
