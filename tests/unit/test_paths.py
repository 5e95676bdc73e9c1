"""Request paths to distribution API endpoints, on the raw, still percent-encoded path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Kind
from proxy.oci.names import MAX_NAME_LENGTH, InvalidName, is_valid_name
from proxy.oci.paths import UnknownEndpoint, V2Path, parse_v2_path

DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_alphanumerics = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_components = st.one_of(
    st.builds(
        lambda first, rest: first + "".join(sep + run for sep, run in rest),
        _alphanumerics,
        st.lists(
            st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alphanumerics), max_size=3
        ),
    ),
    # Components that are also words of the API paths must not confuse the parser.
    st.sampled_from(["manifests", "blobs", "uploads", "tags", "list", "v2"]),
)
valid_names = (
    st.lists(_components, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_NAME_LENGTH)
)
valid_tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", fullmatch=True)
digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda hex_part: f"sha256:{hex_part}"
)

# Pieces for paths that try to escape or confuse: traversal, encodings, unicode lookalikes.
NASTY = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "%2f",
    "%2F",
    "%00",
    "%",
    "/",
    "//",
    "\\",
    "..%2f",
    "\u2024\u2024",  # ONE DOT LEADER twice
    "\uff0e\uff0e",  # FULLWIDTH FULL STOP twice
    "ü",
    "\0",
    "\n",
    " ",
    "?",
    "#",
    ";",
    "A",
    "a",
    "library",
    "nginx",
    "v2",
    "manifests",
    "blobs",
    "uploads",
    "tags",
    "list",
    "latest",
    DIGEST,
]
nasty_paths = st.builds(
    lambda prefix, pieces: prefix + "".join(pieces),
    st.sampled_from(["/v2/", "/v2", "/v2//", "/", "", "/v2/../", "/V2/"]),
    st.lists(st.sampled_from(NASTY), max_size=12),
)
structured_nasty_paths = st.builds(
    lambda name_pieces, tail: "/v2/" + "/".join(name_pieces) + tail,
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=6),
    st.sampled_from(["/manifests/latest", f"/blobs/{DIGEST}", "/tags/list", "/blobs/uploads/", ""]),
)


# --- examples -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_base(path: str) -> None:
    assert parse_v2_path(path) == V2Path(Kind.BASE)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/v2/library/nginx/manifests/latest",
            V2Path(Kind.MANIFEST, "library/nginx", "latest"),
        ),
        (f"/v2/nginx/manifests/{DIGEST}", V2Path(Kind.MANIFEST, "nginx", DIGEST)),
        (f"/v2/a/b/c/blobs/{DIGEST}", V2Path(Kind.BLOB, "a/b/c", DIGEST)),
        ("/v2/org/app/tags/list", V2Path(Kind.TAGS_LIST, "org/app")),
        ("/v2/ghcr.io/org/app/manifests/v1", V2Path(Kind.MANIFEST, "ghcr.io/org/app", "v1")),
        # Names whose components are words of the API.
        ("/v2/a/manifests/manifests/latest", V2Path(Kind.MANIFEST, "a/manifests", "latest")),
        (f"/v2/blobs/blobs/{DIGEST}", V2Path(Kind.BLOB, "blobs", DIGEST)),
        ("/v2/manifests/tags/list", V2Path(Kind.TAGS_LIST, "manifests")),
        ("/v2/tags/list/tags/list", V2Path(Kind.TAGS_LIST, "tags/list")),
        ("/v2/a/blobs/b/manifests/x", V2Path(Kind.MANIFEST, "a/blobs/b", "x")),
        (f"/v2/a/manifests/b/blobs/{DIGEST}", V2Path(Kind.BLOB, "a/manifests/b", DIGEST)),
    ],
)
def test_endpoints(path: str, expected: V2Path) -> None:
    assert parse_v2_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v2/app/blobs/uploads",
        "/v2/app/blobs/uploads/",
        "/v2/org/app/blobs/uploads/0b7c6f5e-2a6c-4d5b-9b2e-1a3c5e7f9d11",
        "/v2/org/blobs/uploads/blobs/uploads/",
    ],
)
def test_blob_uploads_are_recognised(path: str) -> None:
    parsed = parse_v2_path(path)
    assert parsed.kind is Kind.BLOB_UPLOAD
    assert parsed.reference == ""
    assert path.startswith(f"/v2/{parsed.name}/blobs/uploads")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/v1/",
        "/v2x",
        "/v20/",
        "/V2/",
        "v2/",
        "/v2/nginx",
        "/v2/nginx/",
        "/v2/nginx/manifests",
        "/v2/nginx/manifests/",
        "/v2/nginx/manifests/a/b",
        "/v2/nginx/blobs/",
        "/v2/nginx/tags",
        "/v2/nginx/tags/list/",
        "/v2/_catalog",
        "/v2/nginx/referrers/" + DIGEST,
        "/v2/manifests/latest",
        "/v2/a/blobs/uploads/x/y",
    ],
)
def test_unknown_endpoints(path: str) -> None:
    with pytest.raises(UnknownEndpoint):
        parse_v2_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../etc/manifests/latest",
        "/v2/a/../b/manifests/latest",
        "/v2/%2e%2e/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/a%2Fb/manifests/latest",
        "/v2//a/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/a/./b/manifests/latest",
        "/v2/Library/nginx/manifests/latest",
        "/v2/nginx\u2024\u2024/manifests/latest",
        "/v2/a/%2e%2e/tags/list",
        f"/v2/..%2f/blobs/{DIGEST}",
        "/v2/a%00/blobs/uploads/",
        "/v2/" + "a" * (MAX_NAME_LENGTH + 1) + "/manifests/latest",
    ],
)
def test_invalid_names_are_refused(path: str) -> None:
    with pytest.raises(InvalidName):
        parse_v2_path(path)


def test_references_are_returned_unparsed() -> None:
    # The handler parses references; the path parser only cuts them out.
    assert parse_v2_path("/v2/a/manifests/..").reference == ".."
    assert parse_v2_path("/v2/a/blobs/%2e%2e").reference == "%2e%2e"


# --- properties -----------------------------------------------------------------------


def assert_only_clean_names(path: str) -> None:
    """parse_v2_path(path) gives a clean name or refuses in one of its two ways."""
    try:
        parsed = parse_v2_path(path)
    except (UnknownEndpoint, InvalidName):
        return
    if parsed.kind is Kind.BASE:
        assert parsed.name == ""
        return
    assert is_valid_name(parsed.name)
    assert ".." not in parsed.name
    assert "%" not in parsed.name
    assert all(parsed.name.split("/"))
    assert parsed.name.isascii()


@settings(max_examples=200)
@given(st.text())
def test_any_text_gives_a_clean_name_or_a_known_refusal(text: str) -> None:
    assert_only_clean_names(text)


@settings(max_examples=200)
@given(st.text().map(lambda text: "/v2/" + text))
def test_any_v2_text_gives_a_clean_name_or_a_known_refusal(path: str) -> None:
    assert_only_clean_names(path)


@settings(max_examples=200)
@given(st.one_of(nasty_paths, structured_nasty_paths))
def test_nasty_paths_give_a_clean_name_or_a_known_refusal(path: str) -> None:
    assert_only_clean_names(path)


@given(valid_names, st.one_of(valid_tags, digests))
def test_manifest_paths_round_trip(name: str, reference: str) -> None:
    assert parse_v2_path(f"/v2/{name}/manifests/{reference}") == V2Path(
        Kind.MANIFEST, name, reference
    )


@given(valid_names, digests)
def test_blob_paths_round_trip(name: str, digest: str) -> None:
    assert parse_v2_path(f"/v2/{name}/blobs/{digest}") == V2Path(Kind.BLOB, name, digest)


@given(valid_names)
def test_tags_list_paths_round_trip(name: str) -> None:
    assert parse_v2_path(f"/v2/{name}/tags/list") == V2Path(Kind.TAGS_LIST, name)


@given(valid_names, st.sampled_from(["", "/", "/0b7c6f5e-2a6c-4d5b", "/uploads"]))
def test_blob_upload_paths_round_trip(name: str, tail: str) -> None:
    assert parse_v2_path(f"/v2/{name}/blobs/uploads{tail}") == V2Path(Kind.BLOB_UPLOAD, name)
