"""Where an upstream may send regcache with a redirect, and the pinned address to go there.

A redirect is the upstream (or whoever answers as it) choosing a URL for regcache to fetch
from inside its own network. Left unchecked that is server-side request forgery: a
``Location: http://169.254.169.254/...`` reads a cloud metadata endpoint, ``http://10.0.0.1/``
an internal service, and ``file:`` or ``ftp:`` URLs something else again. So a redirect must
be http(s), and its host must be at a global address unless the upstream itself lives in the
same kind of non-global network (a LAN registry redirecting to its LAN object store), or the
operator said ``allow_private_redirects: true``.

A host name is resolved here, once, and the request is then sent to the checked address
(``Host`` and the TLS server name keep the name), so a DNS answer that changes between the
check and the connection (rebinding) cannot move the request elsewhere. The normal,
non-redirected path costs no extra DNS: the upstream's own address is looked up only when a
redirect to a non-global address needs it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict
from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import UpstreamInvalid
from proxy.metrics import Metrics
from proxy.upstream.failures import unavailable

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
_SCHEMES = frozenset({"http", "https"})


def make_resolver() -> AbstractResolver:
    """The resolver redirect targets are looked up with: aiohttp's own default."""
    return DefaultResolver()


@dataclass(frozen=True)
class Hop:
    """Where to send a request: ``urls`` in turn until one connects (checked addresses of
    one name, as a resolver's answers are tried), with these extra settings."""

    urls: tuple[URL, ...]
    host_header: str | None = None  # the name the address was resolved from, with its port
    server_hostname: str | None = None  # TLS: the name the certificate must carry


async def send(
    session: aiohttp.ClientSession, method: str, hop: Hop, **options: Any
) -> aiohttp.ClientResponse:
    """Send to the hop's addresses in turn; only a failed connection tries the next one."""
    server_hostname = hop.server_hostname
    if hop.host_header is not None:
        headers: CIMultiDict[str] = CIMultiDict(options.get("headers") or {})
        headers["Host"] = hop.host_header
        options["headers"] = headers
    *others, last = hop.urls
    for url in others:
        try:
            return await session.request(
                method, url, server_hostname=server_hostname, allow_redirects=False, **options
            )
        except aiohttp.ClientConnectorError:
            continue
    return await session.request(
        method, last, server_hostname=server_hostname, allow_redirects=False, **options
    )


def address_kind(address: IPAddress) -> str | None:
    """Which non-global network ``address`` is in, or None for a global (public) one."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_multicast:
        return "reserved"
    return None


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused(kind: str | None, upstream_kinds: frozenset[str], allow: bool) -> bool:
    """True when a redirect to an address of ``kind`` (None: global) must be refused.

    ``upstream_kinds`` are the kinds of the upstream's own addresses: a registry on the LAN
    may send regcache to its LAN object store, but not to a link-local metadata endpoint.
    The unspecified address (0.0.0.0, ::) means "this host" to the kernel and is never a real
    redirect target.
    """
    if kind is None:
        return False
    if kind == "unspecified":
        return True
    return not allow and kind not in upstream_kinds


class RedirectRefused(UpstreamInvalid):
    """A redirect regcache would not follow; never followed, nothing was sent there."""


class RedirectGuard:
    """The redirect policy of one upstream."""

    def __init__(self, upstream: UpstreamConfig, metrics: Metrics | None = None) -> None:
        self._upstream = upstream
        self._metrics = metrics
        self._resolver: AbstractResolver | None = None
        self._upstream_kinds: frozenset[str] | None = None

    async def hop(self, target: URL, method: str = "GET") -> Hop:
        """Where to send a request redirected to ``target``; RedirectRefused if nowhere.

        A refusal is counted as a ``method`` request with status ``refused``: one that was
        never sent.
        """
        scheme, host = target.scheme.lower(), target.raw_host
        if scheme not in _SCHEMES:
            raise self._refused(target, method, f"scheme {scheme or '(none)'!r} is not http(s)")
        if not host:
            raise self._refused(target, method, "the URL has no host")
        literal = ip_literal(host)
        addresses = [literal] if literal is not None else await self._resolve(target, method, host)
        allowed = [address for address in addresses if await self._permitted(address)]
        if allowed:
            return self._pinned(target, host, allowed, literal is None)
        kinds = "/".join(sorted({address_kind(a) or "global" for a in addresses}))
        article = "an" if kinds[0] in "aeiou" else "a"
        raise self._refused(target, method, f"{host} is at {article} {kinds} address")

    async def _permitted(self, address: IPAddress) -> bool:
        kind = address_kind(address)
        if kind is None:
            return True  # a global address: the upstream's own need not be looked up
        allow = self._upstream.allow_private_redirects
        return not refused(kind, await self.upstream_kinds(), allow)

    async def upstream_kinds(self) -> frozenset[str]:
        """The kinds of non-global network the upstream's own host is in (empty: public)."""
        if self._upstream_kinds is None:
            host = URL(self._upstream.url).raw_host or ""
            literal = ip_literal(host)
            try:
                found = [literal] if literal is not None else await self._lookup(host, 0)
            except (OSError, TimeoutError):
                # Unknown this time: judged as public, the stricter reading, and asked again
                # next time rather than remembered.
                return frozenset()
            self._upstream_kinds = frozenset(k for a in found if (k := address_kind(a)))
        return self._upstream_kinds

    async def _resolve(self, target: URL, method: str, host: str) -> list[IPAddress]:
        """The addresses of ``host``; a failed lookup is a failed connection, not a refusal."""
        try:
            found = await self._lookup(host, target.port or 0)
            if not found:
                raise OSError(f"no address for {host}")
        except (OSError, TimeoutError) as exc:
            if self._metrics is not None:
                self._metrics.upstream_requests.labels(self._upstream.name, method, "error").inc()
            where = f"{target.scheme}://{host}"
            raise unavailable(
                exc,
                f"upstream {self._upstream.name} redirected to {where}, which does not resolve",
                host=host,
            ) from exc
        return found

    async def _lookup(self, host: str, port: int) -> list[IPAddress]:
        if self._resolver is None:
            self._resolver = make_resolver()
        async with asyncio.timeout(self._upstream.connect_timeout):
            answers = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        found = [ip_literal(answer["host"]) for answer in answers]
        return [address for address in found if address is not None]

    def _pinned(self, target: URL, host: str, addresses: list[IPAddress], named: bool) -> Hop:
        if not named:
            return Hop((target,))
        # Only the addresses that passed: a refused one is never connected to.
        pinned = tuple(target.with_host(str(address)) for address in addresses)
        host_header = host if target.is_default_port() else f"{host}:{target.port}"
        tls_name = host if target.scheme.lower() == "https" else None
        return Hop(pinned, host_header, tls_name)

    def _refused(self, target: URL, method: str, why: str) -> RedirectRefused:
        # The query is never logged nor shown: a presigned URL's query is a credential.
        where = f"{target.scheme}://{target.raw_host or ''}"
        if self._metrics is not None:
            self._metrics.upstream_requests.labels(self._upstream.name, method, "refused").inc()
        log.warning("refused to follow upstream %s to %s: %s", self._upstream.name, where, why)
        return RedirectRefused(
            f"upstream {self._upstream.name} sent regcache to a URL it refuses: {why}",
            detail={"upstream": self._upstream.name, "scheme": target.scheme, "reason": why},
        )
