"""Credentials for one upstream: anonymous, Basic, or the Bearer token flow.

The first 401 teaches us the upstream's challenge; after that every request carries the
right header up front, so a warm proxy never pays a 401 round trip. Bearer tokens are
cached per scope until shortly before ``expires_in``, and concurrent requests for the
same scope share one token request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import Unauthorized, UpstreamInvalid, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.model import Credentials
from proxy.upstream.body import read_at_most
from proxy.upstream.challenge import Challenge, parse_challenge
from proxy.upstream.failures import TRANSPORT_ERRORS, unavailable
from proxy.upstream.redirects import RedirectGuard, send
from proxy.upstream.timeouts import timeout_for

log = logging.getLogger(__name__)

# Distribution's default when a token response has no expires_in.
DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh a little early so a token never expires between our check and the upstream's.
EXPIRY_MARGIN = 10.0
MAX_TOKEN_RESPONSE = 1024 * 1024


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def configured_credentials(upstream: UpstreamConfig) -> Credentials | None:
    """regcache's own credentials for ``upstream``, from its configuration."""
    if upstream.username is None or upstream.password is None:
        return None
    return Credentials(upstream.username, upstream.password)


class Authenticator:
    """One identity at one upstream: regcache's configured one, or a passthrough client's."""

    def __init__(
        self,
        upstream: UpstreamConfig,
        credentials: Credentials | None,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        guard: RedirectGuard,
    ) -> None:
        self._upstream = upstream
        self._credentials = credentials
        # The challenge's realm is a URL the upstream chose, like a redirect's, and the
        # Basic credentials go there: it gets the same checks and pinning.
        self._guard = guard
        self._session = session
        self._metrics = metrics
        self._challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._pending: dict[str, asyncio.Task[_Token]] = {}

    @property
    def _basic(self) -> str | None:
        credentials = self._credentials
        if credentials is None:
            return None
        raw = f"{credentials.username}:{credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    async def header(self, scope: str) -> str | None:
        """The Authorization header to send for a request needing ``scope``."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic
        if challenge.scheme == "bearer":
            return "Bearer " + (await self._token(scope)).value
        return None

    def on_unauthorized(self, www_authenticate: str | None, scope: str, sent_auth: bool) -> bool:
        """Learn from a 401. True when one retry with new credentials may succeed."""
        challenge = parse_challenge(www_authenticate) if www_authenticate else None
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        # The scope of a challenge belongs to one request; tokens are keyed by ours.
        params = {k: v for k, v in challenge.params.items() if k != "scope"}
        self._challenge = Challenge(challenge.scheme, params)
        if challenge.scheme == "basic":
            return not sent_auth and self._basic is not None
        # A cached token the upstream no longer honours is dropped, and a fresh one asked for.
        self._tokens.pop(scope, None)
        return True

    async def _token(self, scope: str) -> _Token:
        token = self._tokens.get(scope)
        if token is not None and token.expires_at > time.time():
            return token
        task = self._pending.get(scope)
        if task is None:
            task = asyncio.ensure_future(self._fetch_token(scope))
            self._pending[scope] = task
            task.add_done_callback(lambda _: self._pending.pop(scope, None))
        token = await asyncio.shield(task)
        self._tokens[scope] = token
        return token

    async def _fetch_token(self, scope: str) -> _Token:
        assert self._challenge is not None
        realm = self._challenge.realm
        if not realm:
            raise UpstreamInvalid("upstream sent a Bearer challenge without a realm")
        # No scope asks for a token good for /v2/ alone.
        params: dict[str, str] = {"scope": scope} if scope else {}
        if service := self._challenge.params.get("service"):
            params["service"] = service
        headers = {}
        if basic := self._basic:
            headers["Authorization"] = basic
        hop = await self._guard.hop(URL(realm).update_query(params))
        started = time.monotonic()
        try:
            async with await send(
                self._session, "GET", hop, headers=headers, timeout=timeout_for(self._upstream)
            ) as resp:
                self._count(resp.status, started)
                body = await read_at_most(resp, MAX_TOKEN_RESPONSE)
                status = resp.status
        except TRANSPORT_ERRORS as exc:
            self._count("error", started)
            raise unavailable(exc, "token endpoint unreachable", realm=realm) from exc
        if status in (401, 403):
            raise Unauthorized(
                "the upstream token endpoint refused the credentials",
                detail={"upstream": self._upstream.name, "status": status},
            )
        if status != 200:
            raise UpstreamUnavailable(
                "token endpoint failed", detail={"realm": realm, "status": status}
            )
        return self._parse_token(body)

    def _parse_token(self, body: bytes) -> _Token:
        if len(body) > MAX_TOKEN_RESPONSE:
            raise UpstreamInvalid("token endpoint sent more than 1 MiB")
        try:
            document = json.loads(body)
            value = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as exc:
            raise UpstreamInvalid("token endpoint sent an unreadable answer") from exc
        if not isinstance(value, str) or not value:
            raise UpstreamInvalid("token endpoint sent no token")
        lifetime = max(lifetime - EXPIRY_MARGIN, 1.0)
        return _Token(value, time.time() + lifetime)

    def _count(self, status: int | str, started: float) -> None:
        name = self._upstream.name
        self._metrics.upstream_requests.labels(name, "GET", str(status)).inc()
        self._metrics.upstream_duration.labels(name).observe(time.monotonic() - started)
