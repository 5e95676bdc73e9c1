"""The redirect policy as pure decisions. Nothing here connects anywhere: the addresses below
(public ones included) are only classified, and names are resolved by a fake resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

import proxy.upstream.redirects
from proxy.config import UpstreamConfig
from proxy.errors import UpstreamUnavailable
from proxy.upstream.redirects import (
    RedirectGuard,
    RedirectRefused,
    address_kind,
    refused,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("192.0.2.1", "private"),  # TEST-NET-1: Python counts the documentation nets private
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "reserved"),  # carrier-grade NAT: neither private nor global
        ("224.0.0.1", "reserved"),  # multicast, which Python calls global
        ("240.0.0.1", "private"),  # reserved; in Python's private list
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("kind", "upstream_kinds", "allow", "expected"),
    [
        (None, frozenset(), False, False),
        ("loopback", frozenset(), False, True),
        ("loopback", frozenset({"loopback"}), False, False),
        ("link-local", frozenset({"loopback"}), False, True),
        ("private", frozenset({"private"}), False, False),
        ("link-local", frozenset({"private"}), False, True),
        ("link-local", frozenset(), True, False),
        ("unspecified", frozenset({"unspecified"}), True, True),
    ],
)
def test_refused(
    kind: str | None, upstream_kinds: frozenset[str], allow: bool, expected: bool
) -> None:
    assert refused(kind, upstream_kinds, allow) is expected


class FakeResolver(AbstractResolver):
    def __init__(self, hosts: dict[str, list[str]]) -> None:
        self.hosts = hosts
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.hosts:
            raise OSError(-2, "Name or service not known")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=0, proto=0, flags=0)
            for a in self.hosts[host]
        ]

    async def close(self) -> None:
        pass


HOSTS = {
    "registry.example.com": ["93.184.215.14"],
    "lan-registry.example": ["10.1.2.3"],
    "blobs.example.com": ["93.184.215.15", "2606:4700::15"],
    "evil.example.com": ["169.254.169.254"],
    "mixed.example.com": ["127.0.0.1", "93.184.215.16"],
}


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    fake = FakeResolver(HOSTS)
    monkeypatch.setattr(proxy.upstream.redirects, "make_resolver", lambda: fake)
    return fake


def guard(url: str = "https://registry.example.com", allow: bool = False) -> RedirectGuard:
    return RedirectGuard(UpstreamConfig(name="r", url=url, allow_private_redirects=allow))


@pytest.mark.parametrize(
    ("url", "kinds"),
    [
        ("https://registry.example.com", frozenset()),
        ("http://10.0.0.5:5000", {"private"}),
        ("http://[::1]:5000", {"loopback"}),
        ("https://lan-registry.example", {"private"}),
        ("https://unresolvable.example", frozenset()),  # unknown counts as public: stricter
    ],
)
async def test_upstream_kinds(url: str, kinds: frozenset[str], resolver: FakeResolver) -> None:
    assert await guard(url).upstream_kinds() == kinds


async def test_a_name_is_pinned_to_its_checked_addresses(resolver: FakeResolver) -> None:
    hop = await guard().hop(URL("https://blobs.example.com/b?X-Amz-Signature=a%2F", encoded=True))
    assert [str(url) for url in hop.urls] == [
        "https://93.184.215.15/b?X-Amz-Signature=a%2F",
        "https://[2606:4700::15]/b?X-Amz-Signature=a%2F",
    ]
    assert hop.host_header == "blobs.example.com"
    assert hop.server_hostname == "blobs.example.com"
    # Every answer was global, so the upstream's own address was never looked up.
    assert resolver.asked == ["blobs.example.com"]


async def test_only_the_allowed_answers_of_a_name_are_used(resolver: FakeResolver) -> None:
    hop = await guard().hop(URL("http://mixed.example.com:8080/x"))
    assert [str(url) for url in hop.urls] == ["http://93.184.215.16:8080/x"]
    assert hop.host_header == "mixed.example.com:8080"
    assert hop.server_hostname is None


async def test_an_address_is_not_resolved(resolver: FakeResolver) -> None:
    hop = await guard().hop(URL("https://93.184.215.14/x"))
    assert hop.urls == (URL("https://93.184.215.14/x"),)
    assert hop.host_header is None
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' is not http(s)"),
        ("ftp://blobs.example.com/x", "scheme 'ftp' is not http(s)"),
        ("http://evil.example.com/latest/meta-data", "evil.example.com is at a link-local"),
        ("http://169.254.169.254/", "169.254.169.254 is at a link-local address"),
        ("http://192.0.2.1/", "192.0.2.1 is at a private address"),
        ("http://[fd00::1]/", "fd00::1 is at a private address"),
        ("http://0.0.0.0/", "0.0.0.0 is at an unspecified address"),
    ],
)
async def test_refusals(target: str, reason: str, resolver: FakeResolver) -> None:
    with pytest.raises(RedirectRefused) as refusal:
        await guard().hop(URL(target))
    assert reason in refusal.value.detail["reason"]
    assert refusal.value.http_status == 502


async def test_a_name_that_does_not_resolve_is_unavailable(resolver: FakeResolver) -> None:
    with pytest.raises(UpstreamUnavailable) as failure:
        await guard().hop(URL("http://nowhere.example/x?sig=secret"))
    assert failure.value.http_status == 503
    assert "secret" not in str(failure.value.to_json())


async def test_a_lan_upstream_may_redirect_to_its_lan_only(resolver: FakeResolver) -> None:
    lan = guard("https://lan-registry.example")
    assert (await lan.hop(URL("http://10.9.9.9/x"))).urls == (URL("http://10.9.9.9/x"),)
    with pytest.raises(RedirectRefused):
        await lan.hop(URL("http://169.254.169.254/"))


async def test_allow_private_redirects(resolver: FakeResolver) -> None:
    allowing = guard(allow=True)
    assert (await allowing.hop(URL("http://evil.example.com/x"))).urls
    with pytest.raises(RedirectRefused):
        await allowing.hop(URL("http://0.0.0.0/x"))
