"""Hostile requests against the real server: always a clear 4xx, never a 5xx or a traceback,
never a file outside the cache directory.

The proxy runs offline so that nothing generated here can reach a network, and so that every
well-formed request gets its definite answer (a 404) rather than an upstream error.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import Config, UpstreamConfig
from proxy.server.app import build_app
from tests.support.threadedapp import ThreadedApp

OCI_CODES = {
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_UNKNOWN",
    "BLOB_UNKNOWN",
    "RANGE_INVALID",
    "UNSUPPORTED",
    "SIZE_INVALID",
}
CACHE_LAYOUT = {"blobs", "tmp", "index"}
HEX = "0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedApp, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    cache = root / "cache"
    config = Config(
        cache_dir=cache,
        offline=True,
        upstreams=(UpstreamConfig("docker.io", "http://127.0.0.1:9"),),
    )
    app = ThreadedApp(build_app(config))
    app.start()
    yield app, root
    app.stop()


def send(
    server: ThreadedApp, method: str, path: str, headers: dict[str, str]
) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def assert_clear_refusal(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body
    assert b"Traceback" not in body
    # A HEAD answer carries the headers of the error but, rightly, no body.
    if status >= 400 and content_type.startswith("application/json") and body:
        error = json.loads(body)["errors"][0]
        assert error["code"] in OCI_CODES
        assert error["message"]


def assert_nothing_outside_the_cache(root: Path) -> None:
    assert {p.name for p in root.iterdir()} == {"cache"}
    assert {p.name for p in (root / "cache").iterdir()} <= CACHE_LAYOUT
    assert list((root / "cache" / "tmp").iterdir()) == []
    assert [p for p in (root / "cache" / "blobs").rglob("*") if p.is_file()] == []


PIECES = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "library",
        "Library",
        "a" * 300,
        "",
        "%00",
        "~",
        "ü",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "latest",
        "sha256:" + "a" * 64,
        "sha256:" + "A" * 64,
        "sha256:abc",
        "md5:" + "0" * 32,
        "sha512:" + "f" * 128,
        "sha256:" + "g" * 64,
        "%3a",
        ";",
        "?ns=",
        "?ns=docker.io",
        "?ns=..%2f..",
        "#frag",
        "*",
        "etc",
        "passwd",
    ]
)
PATHS = st.one_of(
    st.lists(PIECES, min_size=1, max_size=8).map(lambda parts: "/v2/" + "/".join(parts)),
    st.text(max_size=120).map(lambda text: "/v2/" + text),
    st.text(max_size=60).map(lambda text: "/" + text),
)
METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def safe_path(path: str) -> str:
    # What an HTTP client can put on the wire: non-ASCII and spaces percent-encoded.
    return quote(path, safe="/%:.-_~+@;?=#*\\!$&'(),")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=METHODS, path=PATHS, range_header=HEADER_VALUES, accept=HEADER_VALUES)
def test_generated_requests_get_clear_refusals(
    server: tuple[ThreadedApp, Path], method: str, path: str, range_header: str, accept: str
) -> None:
    app, root = server
    headers = {"Range": range_header, "Accept": accept}
    assert_clear_refusal(*send(app, method, safe_path(path), headers))
    assert_nothing_outside_the_cache(root)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/v2/library/%2e%2e/%2e%2e/etc/manifests/passwd", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/..%2F..%2Fetc/blobs/sha256:" + "a" * 64, {}, 400, "NAME_INVALID"),
        ("GET", "/v2/library/x%2Fy/manifests/1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/library/UPPER/manifests/1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/" + "a" * 300 + "/manifests/1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/" + "/".join(["abcdefghij"] * 30) + "/manifests/1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/library//x/manifests/1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/library/x/blobs/sha256:" + "a" * 63, {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/x/blobs/sha384:" + "a" * 96, {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/x/blobs/sha256:" + "z" * 64, {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/x/blobs/" + "a" * 64, {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/x/manifests/" + "t" * 129, {}, 404, "MANIFEST_UNKNOWN"),
        (
            "GET",
            "/v2/library/x/blobs/sha256:" + HEX * 4,
            {"Range": "bytes=9-1"},
            404,
            "BLOB_UNKNOWN",
        ),
        ("GET", "/v2/library/x/manifests/1?ns=../../etc", {}, 404, "NAME_UNKNOWN"),
        ("OPTIONS", "/v2/library/x/manifests/1", {}, 405, "UNSUPPORTED"),
        ("DELETE", "/v2/library/x/blobs/sha256:" + HEX * 4, {}, 405, "UNSUPPORTED"),
        ("POST", "/v2/library/x/blobs/uploads/", {}, 405, "UNSUPPORTED"),
        ("GET", "/v2/library/x/referrers/sha256:" + HEX * 4, {}, 404, "UNSUPPORTED"),
    ],
)
def test_hand_written_hostile_requests(
    server: tuple[ThreadedApp, Path],
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    app, root = server
    got_status, content_type, body = send(app, method, path, headers)
    assert (got_status, json.loads(body)["errors"][0]["code"]) == (status, code)
    assert content_type.startswith("application/json")
    assert_nothing_outside_the_cache(root)


def test_oversized_headers_and_non_http_methods_are_refused_without_a_traceback(
    server: tuple[ThreadedApp, Path],
) -> None:
    app, root = server
    # Refused by the HTTP parser before any handler runs: a plain 400 and a closed connection.
    status, _, body = send(app, "GET", "/v2/", {"X-Huge": "a" * 20_000})
    assert status == 400
    assert b"Traceback" not in body
    status, _, body = send(app, "BREW", "/v2/library/x/manifests/1", {})
    assert status == 400
    assert b"Traceback" not in body
    assert_nothing_outside_the_cache(root)
