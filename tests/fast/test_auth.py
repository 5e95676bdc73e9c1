"""Upstream credentials: Basic, the Bearer token flow against the fake's token server, and
redirected blobs that must not carry them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fast.conftest import ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, TokenAuth
from tests.support.inproxy import InProcessRegcache

CREDS = {"username": "alice", "password": "s3cret"}
TAG = "/v2/library/app/manifests/1.0"


async def pull(regcache: InProcessRegcache, image: FakeImage, name: str = "library/app") -> None:
    """What a runtime does: the manifest by tag, then every blob."""
    manifest = await regcache.get(f"/v2/{name}/manifests/{image.tag}", {"Accept": OCI_MANIFEST})
    assert manifest.status == 200, manifest.body
    assert manifest.body == image.manifest
    for digest, layer in zip(image.layer_digests, image.layers, strict=True):
        assert (await regcache.get(blob_path(digest, name))).body == layer


@pytest.fixture
async def token_registry() -> AsyncIterator[FakeRegistry]:
    async with FakeRegistry(token=TokenAuth(users={"alice": "s3cret"}, anonymous=False)) as fake:
        yield fake


@pytest.fixture
async def basic_registry() -> AsyncIterator[FakeRegistry]:
    async with FakeRegistry(basic=("alice", "s3cret")) as fake:
        yield fake


async def test_bearer_tokens_are_fetched_once_per_repository(
    make_proxy: ProxyFactory, token_registry: FakeRegistry
) -> None:
    app = token_registry.push_image("library/app", "1.0")
    tool = token_registry.push_image("org/tool", "2.0")
    regcache = await make_proxy(url=token_registry.url, **CREDS)
    await pull(regcache, app)
    await pull(regcache, tool, "org/tool")
    await pull(regcache, app)
    assert token_registry.token_scopes == [
        "repository:library/app:pull",
        "repository:org/tool:pull",
    ]
    # Learning the challenge costs one 401, on the first request only.
    assert await regcache.metric("regcache_upstream_requests_total", status="401") == 1


async def test_a_token_the_upstream_stops_honouring_is_replaced(
    make_proxy: ProxyFactory, token_registry: FakeRegistry
) -> None:
    image = token_registry.push_image("library/app", "1.0")
    regcache = await make_proxy(url=token_registry.url, tag_ttl=0, **CREDS)
    await pull(regcache, image)
    token_registry.revoke_tokens()
    assert (await regcache.get(TAG, {"Accept": OCI_MANIFEST})).status == 200
    assert len(token_registry.token_scopes) == 2


async def test_anonymous_bearer_pulls_work(make_proxy: ProxyFactory) -> None:
    async with FakeRegistry(token=TokenAuth()) as registry:
        image = registry.push_image("library/app", "1.0")
        await pull(await make_proxy(url=registry.url), image)
        assert registry.token_scopes == ["repository:library/app:pull"]


async def test_wrong_password_for_the_token_server_is_unauthorized(
    make_proxy: ProxyFactory, token_registry: FakeRegistry
) -> None:
    token_registry.push_image("library/app", "1.0")
    regcache = await make_proxy(url=token_registry.url, username="alice", password="wrong")
    answer = await regcache.get(TAG)
    assert answer.status == 401
    assert answer.error_code == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "body", [b"<html>not json</html>", b'{"expires_in": 300}', b'{"token": 42}', b"[1, 2]", b""]
)
async def test_a_token_server_answering_garbage_is_a_clean_502(
    make_proxy: ProxyFactory, body: bytes
) -> None:
    async with FakeRegistry(token=TokenAuth(body=body)) as registry:
        answer = await (await make_proxy(url=registry.url)).get(TAG)
    assert answer.status == 502
    assert answer.error_code == "UNKNOWN"


async def test_a_failing_token_server_is_unavailable(
    make_proxy: ProxyFactory, token_registry: FakeRegistry
) -> None:
    token_registry.faults.append(Fault(path="/token", status=500))
    answer = await (await make_proxy(url=token_registry.url, **CREDS)).get(TAG)
    assert answer.status == 503
    assert answer.error_code == "UNAVAILABLE"


async def test_basic_auth_costs_one_401_in_all(
    make_proxy: ProxyFactory, basic_registry: FakeRegistry
) -> None:
    image = basic_registry.push_image("library/app", "1.0")
    regcache = await make_proxy(url=basic_registry.url, **CREDS)
    await pull(regcache, image)
    assert await regcache.metric("regcache_upstream_requests_total", status="401") == 1


async def test_basic_auth_without_credentials_is_a_clean_401(
    make_proxy: ProxyFactory, basic_registry: FakeRegistry
) -> None:
    basic_registry.push_image("library/app", "1.0")
    answer = await (await make_proxy(url=basic_registry.url)).get(TAG)
    assert answer.status == 401
    assert answer.error_code == "UNAUTHORIZED"


async def test_redirected_blobs_never_carry_the_upstreams_credentials(
    make_proxy: ProxyFactory, basic_registry: FakeRegistry
) -> None:
    image = basic_registry.push_image("library/app", "1.0")
    basic_registry.faults.append(Fault(path=r"/v2/.*/blobs/.*", redirect=True))
    await pull(await make_proxy(url=basic_registry.url, **CREDS), image)
    storage = [seen for seen in basic_registry.seen if seen.path.startswith("/_storage/")]
    assert len(storage) == len(image.layers)
    for seen in storage:
        assert "Authorization" not in seen.headers
        # A presigned URL's query must arrive byte for byte.
        assert seen.query == "sig=a%2Fb%3D%3D"
