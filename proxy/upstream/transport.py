"""HTTP to one upstream registry: its URLs, credentials, redirects and bookkeeping.

Redirects are followed by hand: Docker Hub and S3-backed registries send blobs to
another host, and the upstream's credentials must never travel there; where a redirect may
lead at all is proxy.upstream.redirects' decision.

Answers come back as raw aiohttp responses; only ``proxy.upstream`` ever sees one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import UpstreamInvalid, UpstreamOffline
from proxy.metrics import Metrics
from proxy.model import Credentials
from proxy.upstream.auth import Authenticator, configured_credentials, pull_scope
from proxy.upstream.failures import TRANSPORT_ERRORS, describe, unavailable
from proxy.upstream.health import UpstreamHealth
from proxy.upstream.redirects import Hop, RedirectGuard, send
from proxy.upstream.timeouts import timeout_for

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Docker Hub's own hosts answer for docker.io (containerd makes the same exception).
_DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io"})


def api_path(
    repository: str | None, endpoint: str = "", query: Mapping[str, str] | None = None
) -> str:
    """``/v2/`` alone, or ``/v2/<repository>/<endpoint>`` with an optional query."""
    path = f"/v2/{repository}/{endpoint}" if repository else "/v2/"
    return f"{path}?{urlencode(query)}" if query else path


class Transport:
    def __init__(
        self,
        upstream: UpstreamConfig,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        offline: bool = False,
    ) -> None:
        self.upstream = upstream
        self._offline = offline
        self._session = session
        self._metrics = metrics
        self._guard = RedirectGuard(upstream, metrics)
        self._auth = Authenticator(
            upstream, configured_credentials(upstream), session, metrics, self._guard
        )
        self._origin = URL(upstream.url).origin()
        self._timeout = timeout_for(upstream)
        self._namespace = namespace_for(upstream)
        self.health = UpstreamHealth()

    def acting_for(self, credentials: Credentials | None) -> Transport:
        """This upstream under a passthrough client's own credentials (None: anonymous),
        with tokens of its own; redirect pinning, health and metrics stay shared."""
        clone = copy.copy(self)
        clone._auth = Authenticator(
            self.upstream, credentials, self._session, self._metrics, self._guard
        )
        return clone

    def url(self, path: str) -> URL:
        """Where ``path`` (an ``api_path``) is on the upstream, naming the registry meant."""
        if self._namespace is not None:
            separator = "&" if "?" in path else "?"
            path = f"{path}{separator}ns={quote(self._namespace, safe='')}"
        return URL(self.upstream.url + path, encoded=True)

    async def request(
        self,
        method: str,
        path: str,
        repository: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> aiohttp.ClientResponse:
        """Send with credentials, retrying once after a 401 taught us the challenge.

        The caller owns the response and must release it.
        """
        if self._offline:
            raise UpstreamOffline(
                "regcache is offline and this is not in its cache",
                detail={"upstream": self.upstream.name, "path": path},
            )
        scope = pull_scope(repository) if repository else ""
        url = self.url(path)
        header_list = list(headers)
        for attempt in (1, 2):
            authorization = await self._auth.header(scope)
            response = await self._send(method, url, header_list, authorization)
            if response.status == 401 and attempt == 1:
                challenge = response.headers.get("WWW-Authenticate")
                if self._auth.on_unauthorized(challenge, scope, authorization is not None):
                    response.release()
                    continue
            return response
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        authorization: str | None,
    ) -> aiohttp.ClientResponse:
        hop = Hop((url,))
        for _ in range(MAX_REDIRECTS + 1):
            request_headers: CIMultiDict[str] = CIMultiDict(headers)
            # Content is verified byte for byte, so no transfer compression may touch it.
            request_headers["Accept-Encoding"] = "identity"
            if authorization and url.origin() == self._origin:
                request_headers["Authorization"] = authorization
            response = await self._timed(method, hop, request_headers)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.release()
            # encoded=True keeps presigned URLs byte-exact; re-quoting breaks their signature.
            target = URL(location, encoded=True)
            # Joined to the URL as named, not to the pinned address it was sent to.
            url = target if target.is_absolute() else url.join(target)
            hop = await self._guard.hop(url, method)
            if response.status == 303:
                method = "GET"
        where = f"{url.scheme}://{url.raw_host or ''}"  # the query may be a credential
        raise UpstreamInvalid("upstream redirected too many times", detail={"url": where})

    async def _timed(
        self, method: str, hop: Hop, headers: CIMultiDict[str]
    ) -> aiohttp.ClientResponse:
        name = self.upstream.name
        started = time.monotonic()
        try:
            response = await send(
                self._session,
                method,
                hop,
                headers=headers,
                ssl=self.upstream.tls_verify,
                timeout=self._timeout,
            )
        except TRANSPORT_ERRORS as exc:
            self._metrics.upstream_requests.labels(name, method, "error").inc()
            self.health.failed(describe(exc))
            raise unavailable(exc, f"upstream {name} unreachable") from exc
        self._metrics.upstream_requests.labels(name, method, str(response.status)).inc()
        self.health.answered(response.status)
        self._metrics.upstream_duration.labels(name).observe(time.monotonic() - started)
        if (remaining := _ratelimit_remaining(response)) is not None:
            self._metrics.ratelimit_remaining.labels(name).set(remaining)
        return response


def namespace_for(upstream: UpstreamConfig) -> str | None:
    """The ``ns=`` sent upstream: the registry's name, when its URL is some other host.

    containerd tells a mirror which registry a request is for the same way. regcache routes
    by it, so an edge regcache can name a central regcache as the URL of several upstreams.
    A registry's own host is told nothing: some registries refuse unknown query parameters.
    """
    parts = urlsplit(upstream.url)
    name, host = upstream.name.lower(), (parts.hostname or "").lower()
    if name in (host, parts.netloc.lower()):
        return None
    if name == "docker.io" and host in _DOCKER_HUB_HOSTS:
        return None
    return upstream.name


def _ratelimit_remaining(response: aiohttp.ClientResponse) -> int | None:
    """Docker Hub's ``ratelimit-remaining: 76;w=21600``: pulls left in the window."""
    header = response.headers.get("ratelimit-remaining")
    if header is None:
        return None
    try:
        return int(header.split(";", 1)[0])
    except ValueError:
        return None
