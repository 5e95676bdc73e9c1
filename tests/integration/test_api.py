"""The HTTP surface: probes, push refusals, hostile input, Range, tag lists, health."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.conftest import RegcacheFactory
from tests.support.httpclient import http_request
from tests.support.regcache import CORE_METRICS, RegcacheProcess
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def proxy(upstream: Upstream, regcache_factory: RegcacheFactory) -> RegcacheProcess:
    return regcache_factory({"upstreams": [upstream.entry("docker.io", aliases=["hub"])]})


def error_code(response_json: dict[str, list[dict[str, str]]]) -> str:
    return response_json["errors"][0]["code"]


def test_base_endpoint(proxy: RegcacheProcess) -> None:
    for path in ("/v2/", "/v2"):
        response = proxy.get(path)
        assert response.status == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_tls_client_hello_fails_fast_then_plain_http_works(proxy: RegcacheProcess) -> None:
    # skopeo and docker try TLS first on an insecure registry, then fall back to HTTP.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert proxy.get("/v2/").status == 200


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE"])
def test_push_methods_are_unsupported(proxy: RegcacheProcess, method: str) -> None:
    for path in ("/v2/library/small/manifests/1.0", "/v2/library/small/blobs/uploads/"):
        response = proxy.request(method, path, body=b"{}")
        assert response.status == 405
        assert error_code(response.json()) == "UNSUPPORTED"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/library/UPPER/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library/%2e%2e/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library%2F..%2F..%2Fetc/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library//small/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/" + "a" * 300 + "/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library/small/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/library/small/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("/v2/library/small/blobs/sha256:" + "G" * 64, 400, "DIGEST_INVALID"),
        ("/v2/library/small/manifests/sha256:" + "0" * 10, 400, "DIGEST_INVALID"),
        ("/v2/library/small/manifests/" + "t" * 200, 404, "MANIFEST_UNKNOWN"),
        ("/v2/library/small/nothing", 404, "UNSUPPORTED"),
    ],
)
def test_hostile_paths_get_oci_errors(
    proxy: RegcacheProcess, path: str, status: int, code: str
) -> None:
    response = proxy.get(path)
    assert response.status == status
    assert error_code(response.json()) == code
    assert b"Traceback" not in response.body


def test_range_on_a_hit_and_on_a_miss(proxy: RegcacheProcess, upstream: Upstream) -> None:
    image = upstream.images.small
    digest = image.layer_digests[2]
    blob = (image.layout_dir / "blobs/sha256" / digest[7:]).read_bytes()
    path = f"/v2/library/small/blobs/{digest}"

    miss = proxy.get(path, {"Range": "bytes=1000-1999"})
    assert miss.status == 206
    assert miss.body == blob[1000:2000]
    assert miss.headers["Content-Range"] == f"bytes 1000-1999/{len(blob)}"

    # The range was answered early; the whole blob still lands in the cache.
    wait_until(lambda: proxy.metric("regcache_inflight_downloads") == 0, "the download")
    hit = proxy.get(path, {"Range": "bytes=-100"})
    assert hit.status == 206
    assert hit.body == blob[-100:]
    assert proxy.metric("regcache_cache_requests_total", kind="blob", result="hit") == 1

    beyond = proxy.get(path, {"Range": f"bytes={len(blob)}-"})
    assert beyond.status == 416
    head = proxy.request("HEAD", path)
    assert int(head.headers["Content-Length"]) == len(blob)
    assert head.headers["Docker-Content-Digest"] == digest


def test_tags_list_passes_through_with_pagination(
    proxy: RegcacheProcess, upstream: Upstream
) -> None:
    full = proxy.get("/v2/small/tags/list")
    assert full.status == 200
    assert full.json() == {"name": "library/small", "tags": ["1.0"]}
    paged = proxy.get("/v2/hub/library/multi/tags/list?n=1")
    assert paged.json()["tags"] == ["1.0"]
    missing = proxy.get("/v2/library/nope/tags/list")
    assert missing.status == 404
    assert error_code(missing.json()) == "NAME_UNKNOWN"


def test_health_ready_and_metrics(proxy: RegcacheProcess) -> None:
    assert proxy.get("/healthz").status == 200
    assert proxy.get("/readyz").status == 200
    proxy.get("/v2/library/small/manifests/1.0")
    text = proxy.metrics_text()
    for name in CORE_METRICS:
        assert name in text, name


def test_readyz_fails_when_cache_is_not_writable(
    upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    proxy = regcache_factory({"upstreams": [upstream.entry("docker.io")]})
    tmp = proxy.cache_dir / "tmp"
    tmp.rename(proxy.cache_dir / "gone")
    tmp.write_text("not a directory")
    try:
        response = http_request("GET", proxy.url + "/readyz")
        assert response.status == 503
    finally:
        tmp.unlink()
        (proxy.cache_dir / "gone").rename(tmp)
