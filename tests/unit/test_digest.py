"""Digests and manifest references: exact parsing, hashing, and what is refused."""

from __future__ import annotations

import hashlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.names import InvalidTag
from proxy.oci.reference import Reference

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HEX_LENGTH = {"sha256": 64, "sha512": 128}
LOWER_HEX = "0123456789abcdef"
# Every character a digest regcache accepts can contain.
DIGEST_CHARS = frozenset("sha256" + "sha512" + ":" + LOWER_HEX)


@st.composite
def digest_texts(draw: st.DrawFn) -> str:
    algorithm = draw(st.sampled_from(sorted(HEX_LENGTH)))
    length = HEX_LENGTH[algorithm]
    hex_part = draw(st.text(alphabet=LOWER_HEX, min_size=length, max_size=length))
    return f"{algorithm}:{hex_part}"


# --- examples -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        EMPTY_SHA256,
        "sha256:" + "0" * 64,
        "sha512:" + "f" * 128,
        str(Digest.of(b"hello", "sha512")),
    ],
)
def test_parse_accepts_verifiable_digests(text: str) -> None:
    digest = Digest.parse(text)
    assert str(digest) == text
    assert digest.algorithm == text.split(":")[0]
    assert digest.hex == text.split(":")[1]


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "sha256",
        "sha256:",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "SHA256:" + "0" * 64,  # algorithms are lowercase
        "sha256:" + "A" * 64,  # so is the hex
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "0" * 128,  # sha512 length under the sha256 name
        "sha512:" + "0" * 64,
        "md5:d41d8cd98f00b204e9800998ecf8427e",  # cannot be verified, so refused
        "sha384:" + "0" * 96,
        "sha256+b64u:" + "0" * 64,
        " " + EMPTY_SHA256,
        EMPTY_SHA256 + " ",
        EMPTY_SHA256 + "\n",
        EMPTY_SHA256 + ":",
        "sha256:" + "g" * 64,
        "sha256:" + "0" * 62 + "%2",
        "sha256:../../../../etc/passwd",
        "sha256::" + "0" * 63,
        "sha256:" + "٣" * 64,  # a non-ASCII digit
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(text)


def test_invalid_digest_is_a_value_error() -> None:
    assert issubclass(InvalidDigest, ValueError)


def test_error_message_does_not_echo_huge_input() -> None:
    with pytest.raises(InvalidDigest) as caught:
        Digest.parse("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_of_empty_bytes_is_the_well_known_digest() -> None:
    assert str(Digest.of(b"")) == EMPTY_SHA256
    assert Digest.of(b"") == Digest.parse(EMPTY_SHA256)


def test_of_sha512() -> None:
    digest = Digest.of(b"abc", "sha512")
    assert digest.algorithm == "sha512"
    assert digest.hex == hashlib.sha512(b"abc").hexdigest()


def test_matches_only_the_hashed_bytes() -> None:
    digest = Digest.of(b"layer")
    assert digest.matches(b"layer")
    assert not digest.matches(b"Layer")
    assert not digest.matches(b"")


def test_hasher_is_fresh_and_uses_the_algorithm() -> None:
    digest = Digest.of(b"abc", "sha512")
    hasher = digest.hasher()
    hasher.update(b"abc")
    assert hasher.hexdigest() == digest.hex
    assert digest.hasher().hexdigest() == hashlib.sha512(b"").hexdigest()


def test_digests_are_values() -> None:
    first, second = Digest.parse(EMPTY_SHA256), Digest.parse(EMPTY_SHA256)
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, Digest.of(b"x")}) == 2
    with pytest.raises(AttributeError):
        first.hex = "0" * 64  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------


@given(digest_texts())
def test_parse_str_round_trip(text: str) -> None:
    digest = Digest.parse(text)
    assert str(digest) == text
    assert Digest.parse(str(digest)) == digest


@given(st.binary(), st.sampled_from(sorted(HEX_LENGTH)))
def test_of_matches_its_data_and_parses_back(data: bytes, algorithm: str) -> None:
    digest = Digest.of(data, algorithm)
    assert digest.matches(data)
    assert not digest.matches(data + b"\0")
    assert Digest.parse(str(digest)) == digest


@given(st.text())
def test_parse_is_exact_or_refuses(text: str) -> None:
    """No normalisation: whatever parses prints back as the very same text."""
    try:
        digest = Digest.parse(text)
    except InvalidDigest:
        return
    assert str(digest) == text


@given(
    digest_texts(),
    st.characters(exclude_characters=DIGEST_CHARS),
    st.integers(min_value=0),
    st.booleans(),
)
def test_a_char_outside_the_grammar_is_refused(
    text: str, bad: str, where: int, replace: bool
) -> None:
    index = where % (len(text) + 1)
    mutated = text[:index] + bad + text[index + replace :]
    with pytest.raises(InvalidDigest):
        Digest.parse(mutated)


@given(digest_texts(), st.sampled_from(string.ascii_uppercase + "ghijklmnopqrstuvwxyz"))
def test_a_non_hex_letter_in_the_hex_is_refused(text: str, letter: str) -> None:
    algorithm, hex_part = text.split(":")
    mutated = f"{algorithm}:{letter}{hex_part[1:]}"
    with pytest.raises(InvalidDigest):
        Digest.parse(mutated)


# --- references -----------------------------------------------------------------------


def test_reference_with_a_colon_is_a_digest() -> None:
    reference = Reference.parse(EMPTY_SHA256)
    assert reference.digest == Digest.parse(EMPTY_SHA256)
    assert reference.tag is None
    assert str(reference) == EMPTY_SHA256


def test_reference_without_a_colon_is_a_tag() -> None:
    reference = Reference.parse("v1.2.3")
    assert reference.tag == "v1.2.3"
    assert reference.digest is None
    assert str(reference) == "v1.2.3"


@pytest.mark.parametrize("text", ["sha256:abc", "latest:1", "md5:" + "0" * 32])
def test_reference_with_a_colon_must_be_a_valid_digest(text: str) -> None:
    with pytest.raises(InvalidDigest):
        Reference.parse(text)


@pytest.mark.parametrize("text", ["", ".hidden", "-x", "a" * 129, "a/b", "tag%20", "ünï"])
def test_reference_without_a_colon_must_be_a_valid_tag(text: str) -> None:
    with pytest.raises(InvalidTag):
        Reference.parse(text)


@given(digest_texts())
def test_reference_round_trips_digests(text: str) -> None:
    assert str(Reference.parse(text)) == text
