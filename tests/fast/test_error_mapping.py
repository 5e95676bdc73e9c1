"""Every OCI error the README's Endpoints section promises, produced through the API."""

from __future__ import annotations

import pytest

from tests.fast.conftest import ProxyFactory
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

TAG = "/v2/library/app/manifests/1.0"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/library/UPPER/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library//app/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/library/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/library/app/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("/v2/library/app/manifests/sha256:" + "0" * 10, 400, "DIGEST_INVALID"),
        ("/v2/library/app/manifests/" + "t" * 200, 404, "MANIFEST_UNKNOWN"),
        ("/v2/library/app/manifests/1.0?ns=unknown.example", 404, "NAME_UNKNOWN"),
        ("/v2/library/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/library/app/blobs/{DIGEST}", 404, "BLOB_UNKNOWN"),
        ("/v2/library/nope/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/library/app/blobs/uploads/", 405, "UNSUPPORTED"),
        ("/v2/library/app/nothing", 404, "UNSUPPORTED"),
        ("/nothing", 404, "UNSUPPORTED"),
    ],
)
async def test_client_errors(
    regcache: InProcessRegcache, image: FakeImage, path: str, status: int, code: str
) -> None:
    answer = await regcache.get(path)
    assert answer.status == status
    assert answer.error_code == code
    assert answer.json()["errors"][0]["message"]
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE"])
async def test_push_methods_are_unsupported(
    regcache: InProcessRegcache, registry: FakeRegistry, method: str
) -> None:
    for path in (TAG, "/v2/library/app/blobs/uploads/", "/v2/"):
        answer = await regcache.request(method, path, data=b"{}")
        assert answer.status == 405
        assert answer.error_code == "UNSUPPORTED"
    assert registry.seen == []


# Upstream answer -> what the client gets.
UPSTREAM_FAULTS = {
    "401": (Fault(status=401), 401, "UNAUTHORIZED"),
    "403": (Fault(status=403), 403, "DENIED"),
    "429": (Fault(status=429, headers={"Retry-After": "7"}), 429, "TOOMANYREQUESTS"),
    "500": (Fault(status=500), 503, "UNAVAILABLE"),
    "504": (Fault(status=504), 503, "UNAVAILABLE"),
    "400, its own code": (Fault(status=400, code="TAG_INVALID"), 400, "TAG_INVALID"),
    "404 without a body": (Fault(status=404, code="SOMETHING"), 404, "MANIFEST_UNKNOWN"),
    "redirect loop": (Fault(status=302, headers={"Location": "/v2/loop"}), 502, "UNKNOWN"),
}


@pytest.mark.parametrize(("fault", "status", "code"), UPSTREAM_FAULTS.values(), ids=UPSTREAM_FAULTS)
async def test_upstream_answers_become_oci_errors(
    regcache: InProcessRegcache, registry: FakeRegistry, fault: Fault, status: int, code: str
) -> None:
    registry.faults.append(fault)
    answer = await regcache.get(TAG)
    assert answer.status == status
    assert answer.error_code == code
    if status == 429:
        assert answer.headers["Retry-After"] == "7"
    head = await regcache.head(TAG)
    assert head.status == status
    assert head.body == b""


async def test_unreachable_upstream_is_unavailable(
    regcache: InProcessRegcache, registry: FakeRegistry
) -> None:
    await registry.stop()
    for path in (TAG, f"/v2/library/app/blobs/{DIGEST}", "/v2/library/app/tags/list"):
        answer = await regcache.get(path)
        assert answer.status == 503
        assert answer.error_code == "UNAVAILABLE"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_manifests_over_4_mib_are_refused(
    regcache: InProcessRegcache, registry: FakeRegistry, chunked: bool
) -> None:
    registry.add_manifest("library/big", b"{" + b" " * (4 * 1024 * 1024) + b"}", OCI_MANIFEST, "1")
    registry.faults.append(Fault(chunked=chunked))
    answer = await regcache.get("/v2/library/big/manifests/1")
    assert answer.status == 502
    assert answer.error_code == "UNKNOWN"
    assert "4 MiB" in answer.json()["errors"][0]["message"]


async def test_a_tag_list_upstream_failure_is_passed_on(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    registry.faults.append(Fault(status=429, headers={"Retry-After": "3"}))
    answer = await regcache.get("/v2/library/app/tags/list")
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "3"


async def test_errors_name_the_namespace_the_client_sent(
    make_proxy: ProxyFactory, image: FakeImage
) -> None:
    regcache = await make_proxy()
    answer = await regcache.get("/v2/library/app/manifests/nope?ns=docker.io")
    assert answer.status == 404
    assert answer.headers["OCI-Namespace"] == "docker.io"
