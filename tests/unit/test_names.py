"""Repository names and tags, held to the grammar of the OCI distribution spec."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.oci.names import (
    MAX_NAME_LENGTH,
    InvalidName,
    InvalidTag,
    is_valid_name,
    validate_name,
    validate_tag,
)

# Straight from the distribution spec.
NAME_GRAMMAR = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
TAG_GRAMMAR = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"

# Built piece by piece from the grammar (st.from_regex is too slow here); the first property
# test checks every generated name against NAME_GRAMMAR itself.
_alphanumerics = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_separators = st.sampled_from([".", "_", "__", "-", "--", "---"])
_components = st.one_of(
    st.builds(
        lambda first, rest: first + "".join(sep + run for sep, run in rest),
        _alphanumerics,
        st.lists(st.tuples(_separators, _alphanumerics), max_size=3),
    ),
    # Words with a meaning in API paths are fine as components.
    st.sampled_from(["manifests", "blobs", "uploads", "tags", "list", "v2", "library"]),
)
valid_names = (
    st.lists(_components, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_NAME_LENGTH)
)
valid_tags = st.from_regex(TAG_GRAMMAR, fullmatch=True)

# Pieces that never occur in a valid name, whatever surrounds them.
POISON = ["..", "%", "%2e%2e", "%2f", "//", "A", "Z", "ü", " ", "\n", "\0", ":", "@", "___", "\\"]


# --- names: examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "library/nginx",
        "ghcr.io",
        "my-org/my--app",
        "a__b",
        "a_b.c-d",
        "a/b/c/d/e/f",
        "org/manifests",
        "blobs/uploads",
        "x" * MAX_NAME_LENGTH,
        "/".join(["ab"] * 85),  # 254 characters
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "/a",
        "a/",
        "a//b",
        "..",
        "a/../b",
        "a/..",
        ".a",
        "a.",
        "a..b",
        "a___b",
        "a._b",
        "a-_b",
        "-a",
        "a-",
        "_a",
        "Library/nginx",
        "nginx:latest",
        "nginx@sha256",
        "a%2fb",
        "%2e%2e",
        "a b",
        "a\nb",
        "ünï",
        "a\\b",
        "x" * (MAX_NAME_LENGTH + 1),
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)
    assert not is_valid_name(name)


def test_invalid_name_is_a_value_error() -> None:
    assert issubclass(InvalidName, ValueError)


def test_error_does_not_echo_huge_input() -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name("A" * 200)
    assert len(str(caught.value)) < 200


# --- names: properties ----------------------------------------------------------------


@given(valid_names)
def test_names_from_the_spec_grammar_are_accepted(name: str) -> None:
    assert re.fullmatch(NAME_GRAMMAR, name)
    assert validate_name(name) == name


@given(valid_names, st.sampled_from(POISON), st.integers(min_value=0))
def test_a_poisoned_name_is_refused(name: str, poison: str, where: int) -> None:
    index = where % (len(name) + 1)
    with pytest.raises(InvalidName):
        validate_name(name[:index] + poison + name[index:])


@given(valid_names, st.sampled_from(["/{}", "{}/", "/{}/"]))
def test_leading_or_trailing_slash_is_refused(name: str, template: str) -> None:
    assert not is_valid_name(template.format(name))


@given(valid_names, valid_names)
def test_empty_component_is_refused(first: str, second: str) -> None:
    assert not is_valid_name(f"{first}//{second}")


@given(st.text())
def test_whatever_is_accepted_is_clean(text: str) -> None:
    if not is_valid_name(text):
        return
    assert len(text) <= MAX_NAME_LENGTH
    assert ".." not in text
    assert "%" not in text
    assert text == text.lower()
    assert text.isascii()
    assert all(text.split("/"))


# --- tags -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["latest", "v1.2.3", "1.0", "_private", "A-b_C.d", "a" * 128, "sha256-abc"]
)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", ".x", "-x", "a" * 129, "a/b", "a:b", "a b", "a\n", "ünï", "a%20", "a+b", "a@b"],
)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidTag):
        validate_tag(tag)


@given(valid_tags)
def test_tags_from_the_spec_grammar_are_accepted(tag: str) -> None:
    assert validate_tag(tag) == tag


@given(valid_tags, st.text(alphabet="abc_.-", min_size=1))
def test_tags_longer_than_128_are_refused(tag: str, padding: str) -> None:
    longer = (tag + padding * 129)[:129]
    with pytest.raises(InvalidTag):
        validate_tag(longer)
