"""Requests to one upstream registry.

Redirects are followed by hand: Docker Hub and S3-backed registries send blobs to
another host, and the upstream's credentials must never travel there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    UpstreamInvalid,
    UpstreamOffline,
    UpstreamUnavailable,
)
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.upstream.auth import Authenticator, pull_scope
from proxy.upstream.body import read_at_most
from proxy.upstream.health import UpstreamHealth
from proxy.upstream.timeouts import timeout_for

MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Docker Hub's own hosts answer for docker.io (containerd makes the same exception).
_DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io"})


class UpstreamClient:
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
        self._auth = Authenticator(upstream, session, metrics)
        self._origin = URL(upstream.url).origin()
        self._timeout = timeout_for(upstream)
        self._namespace = namespace_for(upstream)
        self.health = UpstreamHealth()

    async def request(
        self,
        method: str,
        path: str,
        repository: str,
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
        scope = pull_scope(repository)
        url = URL(self.upstream.url + _with_namespace(path, self._namespace), encoded=True)
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
        for _ in range(MAX_REDIRECTS + 1):
            request_headers: CIMultiDict[str] = CIMultiDict(headers)
            # Content is verified byte for byte, so no transfer compression may touch it.
            request_headers["Accept-Encoding"] = "identity"
            if authorization and url.origin() == self._origin:
                request_headers["Authorization"] = authorization
            response = await self._timed(method, url, request_headers)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.release()
            # encoded=True keeps presigned URLs byte-exact; re-quoting breaks their signature.
            target = URL(location, encoded=True)
            url = target if target.is_absolute() else response.url.join(target)
            if response.status == 303:
                method = "GET"
        raise UpstreamInvalid("upstream redirected too many times", detail={"url": str(url)})

    async def _timed(
        self, method: str, url: URL, headers: CIMultiDict[str]
    ) -> aiohttp.ClientResponse:
        name = self.upstream.name
        started = time.monotonic()
        try:
            response = await self._session.request(
                method,
                url,
                headers=headers,
                allow_redirects=False,
                ssl=self.upstream.tls_verify,
                timeout=self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._metrics.upstream_requests.labels(name, method, "error").inc()
            self.health.failed(str(exc) or type(exc).__name__)
            raise UpstreamUnavailable(
                f"upstream {name} unreachable", detail={"error": str(exc) or type(exc).__name__}
            ) from exc
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


def _with_namespace(path: str, namespace: str | None) -> str:
    if namespace is None:
        return path
    return f"{path}{'&' if '?' in path else '?'}ns={quote(namespace, safe='')}"


def _ratelimit_remaining(response: aiohttp.ClientResponse) -> int | None:
    """Docker Hub's ``ratelimit-remaining: 76;w=21600``: pulls left in the window."""
    header = response.headers.get("ratelimit-remaining")
    if header is None:
        return None
    try:
        return int(header.split(";", 1)[0])
    except ValueError:
        return None


_NOT_FOUND: dict[Kind | None, type[RegistryError]] = {
    Kind.MANIFEST: ManifestUnknown,
    Kind.BLOB: BlobUnknown,
    None: NameUnknown,
}


async def error_from(response: aiohttp.ClientResponse, kind: Kind | None) -> RegistryError:
    """The client-facing error for an upstream answer that is not a success.

    4xx answers keep the upstream's own code and message; the upstream knows best why.
    """
    status = response.status
    code, message, detail = await _upstream_error(response)
    base_detail = {"upstream_status": status, **({"upstream": detail} if detail else {})}
    if status == 404:
        error_class = _NOT_FOUND[kind]
        if code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"):
            return error_class(message, base_detail, code=code)
        return error_class(message, base_detail)
    if status == 401:
        return Unauthorized(message or "upstream refused regcache's credentials", base_detail)
    if status == 403:
        return Denied(message, base_detail)
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        headers = {"Retry-After": retry_after} if retry_after else {}
        return TooManyRequests(message, base_detail, headers=headers)
    if 400 <= status < 500:
        return RegistryError(message, base_detail, status=status, code=code or "UNKNOWN")
    return UpstreamUnavailable(f"upstream answered {status}", base_detail)


async def _upstream_error(
    response: aiohttp.ClientResponse,
) -> tuple[str | None, str | None, object]:
    try:
        body = await read_at_most(response, MAX_ERROR_BODY)
        first = json.loads(body)["errors"][0]
        return str(first.get("code")), str(first.get("message") or "") or None, first.get("detail")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, aiohttp.ClientError):
        return None, None, None
    finally:
        response.release()
