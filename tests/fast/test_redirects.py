"""Where an upstream may redirect regcache: refused targets are refused before any connection.

Every test here holds regcache to connecting nowhere but 127.0.0.1 and ::1 (the
``loopback_only`` tripwire on socket.connect), so a refusal that came too late fails the test
instead of sending traffic off the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

import proxy.upstream.redirects
from proxy.upstream.redirects import RedirectGuard
from tests.fast.conftest import ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry, TokenAuth

STORAGE = "/_storage/{digest}?sig=a%2Fb%3D%3D"
# Refused whatever the upstream's own address: not http(s), or the kernel's "this host".
ALWAYS_REFUSED = {
    "file": "file:///etc/passwd",
    "ftp": "ftp://127.0.0.1:{port}/x",
    "gopher": "gopher://127.0.0.1:{port}/_x",
    "unspecified": "http://0.0.0.0:{port}" + STORAGE,
}
# Refused unless the upstream is itself in that kind of network (the fake is on loopback).
NOT_LOOPBACK = {
    "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "rfc1918": "http://10.0.0.1/v2/",
    "ipv6 link-local": "http://[fe80::1]/x",
    "ipv6 unique-local": "http://[fd00::1]/x",
}
NAMED = "http://blobs.example.test:{port}" + STORAGE  # resolves to 127.0.0.1 (fake_dns)
LOOPBACK = {
    "ipv4": "http://127.0.0.1:{port}" + STORAGE,
    "a name resolving to 127.0.0.1": NAMED,
    "localhost": "http://localhost:{port}" + STORAGE,
}
# The fake listens on 127.0.0.1 only, so this one is refused or unreachable, never pulled.
IPV6_LOOPBACK = "http://[::1]:{port}" + STORAGE


class _Tripwire(Exception):
    pass


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every address regcache (or anything) connects to; anything off loopback is refused."""
    seen: list[Any] = []
    original = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        seen.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise _Tripwire(f"connection to {address} attempted")
        original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen
    assert not [a for a in seen if not ipaddress.ip_address(a[0]).is_loopback]


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """Redirect targets are looked up here; the connection itself never looks them up."""
    resolver = FakeResolver({"blobs.example.test": "127.0.0.1", "localhost": "127.0.0.1"})
    monkeypatch.setattr(proxy.upstream.redirects, "make_resolver", lambda: resolver)
    return resolver


@pytest.fixture
def public_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """regcache believes the upstream is at a public address (it is on 127.0.0.1).

    Internal seam: RedirectGuard.upstream_kinds, unit-tested on its own in
    tests/unit/test_redirects.py.
    """

    async def public(self: RedirectGuard) -> frozenset[str]:
        return frozenset()

    monkeypatch.setattr(RedirectGuard, "upstream_kinds", public)


class FakeResolver(AbstractResolver):
    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        address = self.hosts[host]
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


def redirect_blobs(registry: FakeRegistry, location: str) -> None:
    registry.faults.append(Fault(path=r"/v2/.*/blobs/.*", method="GET", location=location))


def storage_requests(registry: FakeRegistry) -> int:
    return sum(1 for seen in registry.seen if seen.path.startswith("/_storage/"))


async def assert_refused(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, **settings: Any
) -> dict[str, Any]:
    regcache = await make_proxy(**settings)
    answer = await regcache.get(blob_path(image.layer_digests[0]))
    assert answer.status == 502, answer.body
    assert answer.error_code == "UNKNOWN"
    assert storage_requests(registry) == 0
    assert await regcache.metric("regcache_upstream_requests_total", status="refused") == 1
    assert await regcache.metric("regcache_upstream_requests_total", status="error") == 0
    detail: dict[str, Any] = answer.json()["errors"][0]["detail"]
    # A presigned URL's query is a credential: never echoed.
    assert "sig=" not in answer.body.decode()
    return detail


@pytest.mark.parametrize("target", ALWAYS_REFUSED.values(), ids=ALWAYS_REFUSED.keys())
@pytest.mark.parametrize("allow", [False, True], ids=["default", "allow_private_redirects"])
async def test_never_followed(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, target: str, allow: bool
) -> None:
    redirect_blobs(registry, target)
    detail = await assert_refused(make_proxy, registry, image, allow_private_redirects=allow)
    assert detail["scheme"] == target.partition(":")[0]
    assert detail["upstream"] == "docker.io"


@pytest.mark.parametrize("target", NOT_LOOPBACK.values(), ids=NOT_LOOPBACK.keys())
async def test_a_loopback_upstream_may_not_send_regcache_to_other_networks(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, target: str
) -> None:
    redirect_blobs(registry, target)
    detail = await assert_refused(make_proxy, registry, image)
    assert "address" in detail["reason"]


@pytest.mark.parametrize("target", LOOPBACK.values(), ids=LOOPBACK.keys())
async def test_a_loopback_upstream_may_send_regcache_to_loopback(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, target: str
) -> None:
    redirect_blobs(registry, target)
    answer = await (await make_proxy()).get(blob_path(image.layer_digests[0]))
    assert answer.status == 200
    assert answer.body == image.layers[0]
    assert storage_requests(registry) == 1


@pytest.mark.parametrize(
    "target", [*LOOPBACK.values(), IPV6_LOOPBACK], ids=[*LOOPBACK.keys(), "ipv6"]
)
async def test_a_public_upstream_may_not_send_regcache_to_loopback(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    target: str,
    public_upstream: None,
) -> None:
    redirect_blobs(registry, target)
    await assert_refused(make_proxy, registry, image)


async def test_allow_private_redirects_opts_in(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, public_upstream: None
) -> None:
    redirect_blobs(registry, NAMED)
    regcache = await make_proxy(allow_private_redirects=True)
    answer = await regcache.get(blob_path(image.layer_digests[0]))
    assert answer.status == 200
    assert answer.body == image.layers[0]


async def test_a_checked_name_is_connected_to_at_the_checked_address(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    fake_dns: FakeResolver,
    loopback_only: list[Any],
) -> None:
    # blobs.example.test resolves nowhere but in regcache's redirect check: were the
    # connection to look the name up again (where a rebinding DNS server would now answer
    # 169.254.169.254), the pull would fail.
    redirect_blobs(registry, NAMED)
    answer = await (await make_proxy()).get(blob_path(image.layer_digests[0]))
    assert answer.status == 200
    assert answer.body == image.layers[0]
    assert fake_dns.asked == ["blobs.example.test"]
    # The tripwire sees regcache's connections (so its silence elsewhere means something).
    assert ("127.0.0.1", registry.port) in loopback_only
    (storage,) = [seen for seen in registry.seen if seen.path.startswith("/_storage/")]
    # The name, not the address, is what the storage host and a presigned signature see.
    assert storage.headers["Host"] == f"blobs.example.test:{registry.port}"
    assert storage.query == "sig=a%2Fb%3D%3D"


async def test_credentials_never_follow_a_redirect_to_another_host(
    make_proxy: ProxyFactory, image: FakeImage
) -> None:
    async with FakeRegistry(basic=("alice", "s3cret")) as registry:
        registry.push_image("library/app", "1.0", layer_sizes=(64 * 1024, 300 * 1024))
        # Same address, another origin (the host differs): no Authorization.
        redirect_blobs(registry, NAMED)
        regcache = await make_proxy(url=registry.url, username="alice", password="s3cret")
        answer = await regcache.get(blob_path(image.layer_digests[0]))
        assert answer.status == 200
        (storage,) = [seen for seen in registry.seen if seen.path.startswith("/_storage/")]
        assert "Authorization" not in storage.headers


@pytest.mark.parametrize(
    "realm",
    ["http://169.254.169.254/token", "file:///etc/passwd", "http://10.0.0.1/token"],
    ids=["metadata", "file", "rfc1918"],
)
async def test_a_token_realm_is_checked_as_a_redirect_is(
    make_proxy: ProxyFactory, realm: str
) -> None:
    # The realm is a URL the upstream chooses, and regcache's credentials go there.
    async with FakeRegistry(token=TokenAuth(users={"alice": "s3cret"}, realm=realm)) as registry:
        registry.push_image("library/app", "1.0")
        regcache = await make_proxy(url=registry.url, username="alice", password="s3cret")
        answer = await regcache.get("/v2/library/app/manifests/1.0")
    assert answer.status == 502, answer.body
    assert answer.error_code == "UNKNOWN"
    assert await regcache.metric("regcache_upstream_requests_total", status="refused") == 1


async def test_a_refusal_is_logged_without_the_query(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redirect_blobs(registry, "http://10.0.0.1/b?X-Amz-Signature=presigned-secret")
    answer = await (await make_proxy()).get(blob_path(image.layer_digests[0]))
    assert answer.status == 502
    refusals = [r.getMessage() for r in caplog.records if "refused to follow" in r.getMessage()]
    assert refusals == [
        "refused to follow upstream docker.io to http://10.0.0.1: 10.0.0.1 is at a private address"
    ]
    assert "presigned-secret" not in caplog.text
    assert b"presigned-secret" not in answer.body
