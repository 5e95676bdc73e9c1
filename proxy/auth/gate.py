"""Who a request acts as, and whether it may pull what it names. Every denial is counted in
``regcache_auth_denied_total{reason}`` and logged for audit, never with a password or token.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from proxy.auth.passwords import PasswordChecker
from proxy.auth.ratelimit import FailureLimiter, Limiter
from proxy.auth.rules import ANONYMOUS_PRINCIPAL, AccessPolicy, Principal
from proxy.auth.tokens import SERVICE, IssuedToken, TokenAuthority, TokenRejected
from proxy.config import Config
from proxy.errors import Denied, RegistryError, TooManyRequests, Unauthorized
from proxy.metrics import Metrics
from proxy.model import Credentials

audit = logging.getLogger("proxy.auth.audit")

MAX_SCOPES = 32
BASIC_CHALLENGE = f'Basic realm="{SERVICE}"'
# Which passthrough upstream, if any, accepts these credentials as a login.
Vouch = Callable[[Credentials], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """A request as the gate sees it. ``realm``: regcache's own /token URL, for challenges;
    ``asked``: what the request wants, in words, for the audit log."""

    address: str
    authorization: str | None
    realm: str
    asked: str


@dataclass(frozen=True, slots=True)
class Target:
    """The canonical upstream and repository after routing, and the name the client used
    (which is what its token's scopes name)."""

    upstream: str
    repository: str
    client_name: str
    passthrough: bool = False


class Gate:
    """Logins to regcache (its htpasswd) and to passthrough upstreams (``vouch``); without
    an htpasswd file only the latter, and anonymous requests are let in as before."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        vouch: Vouch | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        htpasswd = config.auth_htpasswd
        self.anonymous = config.auth_anonymous if htpasswd is not None else True
        self.passwords = PasswordChecker(htpasswd) if htpasswd is not None else None
        self._vouch = vouch
        self.tokens = TokenAuthority(config.auth_token_key_file, config.auth_token_ttl)
        self.policy = AccessPolicy(config.access)
        # Failed logins, per replica unless a fleet's shared one is given (sharedlimit.py).
        self.limiter = limiter or FailureLimiter()
        self._metrics = metrics

    async def authenticate(self, caller: Caller, base: bool = False) -> Principal:
        """The principal of a /v2 request: anonymous, Basic, or one of regcache's tokens.

        ``base``: the request is ``/v2/`` itself, which answers 401 with the challenge to a
        request without credentials even when anonymous pulls are allowed. That is how
        Docker learns that it may log in here at all, as it does from Docker Hub.
        """
        header = caller.authorization
        if header is None:
            if base and self.anonymous:
                raise Unauthorized(
                    "log in, or ask for an anonymous token", headers=self._challenge(caller)
                )
            if self.anonymous:
                return ANONYMOUS_PRINCIPAL
            raise self._unauthorized(caller, "no_credentials", "authentication required")
        scheme, value = _split(header)
        if scheme == "basic":
            principal = await self._login(caller, _basic(value), self._challenge(caller))
            self._metrics.auth_logins.labels("basic").inc()
            return principal
        if scheme == "bearer":
            return self._bearer(caller, value.strip())
        raise self._unauthorized(caller, "malformed", "unsupported authorization scheme")

    def authorize(self, principal: Principal, caller: Caller, target: Target) -> None:
        """The one access check of a pull request, on the canonical name after routing."""
        who = principal.on(target.passthrough)
        if who is not principal and not self.anonymous:
            challenge = self._challenge(caller, target.client_name)
            error: RegistryError = Unauthorized(
                "a login to a passthrough upstream is no login to this one", headers=challenge
            )
            raise self._deny(error, "rule", caller, principal.name, target)
        if principal.scopes is not None and target.client_name not in principal.scopes:
            challenge = self._challenge(caller, target.client_name, "insufficient_scope")
            raise self._deny(
                Unauthorized("the token does not grant this repository", headers=challenge),
                "wrong_scope",
                caller,
                principal.name,
                target,
            )
        if self.policy.allows(who, target.upstream, target.repository):
            return
        if who.authenticated:
            error = Denied(detail={"repository": target.client_name})
        else:
            challenge = self._challenge(caller, target.client_name)
            error = Unauthorized("authentication required", headers=challenge)
        raise self._deny(error, "rule", caller, principal.name, target)

    def allows(
        self, principal: Principal, upstream: str, repository: str, passthrough: bool
    ) -> bool:
        """Whether the rules let ``principal`` pull ``upstream/repository``."""
        return self.policy.allows(principal.on(passthrough), upstream, repository)

    def refused(self, principal: Principal, caller: Caller, target: Target) -> RegistryError:
        """The answer when a passthrough upstream refused the client for the repository: a
        challenge for a client that gave it no credentials of its own, else 403."""
        error: RegistryError
        if principal.credentials is None:
            challenge = self._challenge(caller, target.client_name)
            error = Unauthorized(
                "the upstream wants a login for this repository", headers=challenge
            )
        else:
            error = Denied(
                "the upstream refused these credentials for this repository",
                detail={"repository": target.client_name},
            )
        return self._deny(error, "upstream_refused", caller, principal.name, target)

    async def issue(
        self,
        caller: Caller,
        scopes: Iterable[str],
        account: str | None,
        allowed: Callable[[Principal, str], bool],
        form: Credentials | None = None,
    ) -> IssuedToken:
        """A token for /token: the user's, or anonymous's, with the scopes the rules allow.
        ``form``: the credentials of an OAuth2 password grant (POST), which take the place of
        the Basic credentials of a GET."""
        principal = await self._token_principal(caller, form)
        if account is not None and account != principal.name:
            error = Denied("account does not match the credentials")
            raise self._deny(error, "account_mismatch", caller, principal.name)
        names = self._granted(principal, scopes, allowed)
        if principal.authenticated:
            self._metrics.auth_logins.labels("token").inc()
        return self.tokens.issue(principal, names)

    async def _token_principal(self, caller: Caller, form: Credentials | None) -> Principal:
        challenge = {"WWW-Authenticate": BASIC_CHALLENGE}
        if form is not None:
            return await self._login(caller, form, challenge)
        if caller.authorization is None and self.anonymous:
            return ANONYMOUS_PRINCIPAL
        scheme, value = ("", "") if caller.authorization is None else _split(caller.authorization)
        if scheme != "basic":
            reason = "no_credentials" if caller.authorization is None else "malformed"
            error = Unauthorized("Basic credentials required", headers=challenge)
            raise self._deny(error, reason, caller, "-")
        return await self._login(caller, _basic(value), challenge)

    @staticmethod
    def _granted(
        principal: Principal, scopes: Iterable[str], allowed: Callable[[Principal, str], bool]
    ) -> list[str]:
        # Distribution's token servers grant the allowed subset and drop the rest silently.
        names = []
        for index, scope in enumerate(scopes):
            if index >= MAX_SCOPES:
                break
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and "pull" in actions.split(",") and allowed(principal, name):
                names.append(name)
        return names

    async def _login(
        self, caller: Caller, credentials: Credentials | None, challenge: dict[str, str]
    ) -> Principal:
        """The one password check, for /v2 and both forms of /token: the rate limit first,
        then the password; every failure counts against the client's address."""
        error: RegistryError
        retry = await self.limiter.retry_after(caller.address)
        if retry is not None:
            error = TooManyRequests(
                "too many failed logins; try again later", headers={"Retry-After": str(retry)}
            )
            raise self._deny(error, "rate_limited", caller, "-")
        if credentials is None or not credentials.username:
            await self.limiter.failed(caller.address)
            error = Unauthorized("malformed credentials", headers=challenge)
            raise self._deny(error, "malformed", caller, "-")
        user, password = credentials.username, credentials.password
        if self.passwords is not None and await self.passwords.check(user, password):
            return Principal(user, authenticated=True)
        # regcache's own passwords are never sent upstream: only a login regcache does not
        # know is offered to the passthrough upstreams.
        if self._vouch is not None:
            upstream = await self._vouch(credentials)
            if upstream is not None:
                return Principal(user, True, vouched_by=upstream, credentials=credentials)
        await self.limiter.failed(caller.address)
        error = Unauthorized("wrong user name or password", headers=challenge)
        raise self._deny(error, "bad_credentials", caller, user)

    def _bearer(self, caller: Caller, token: str) -> Principal:
        try:
            principal = self.tokens.verify(token)
        except TokenRejected as rejected:
            challenge = self._challenge(caller, error="invalid_token")
            error = Unauthorized(rejected.message, headers=challenge)
            raise self._deny(error, rejected.reason, caller, "-") from None
        # Tokens outlive neither the user's htpasswd entry nor anonymous access; a user a
        # passthrough upstream vouched for is asked about at that upstream again anyway.
        if principal.vouched_by is not None:
            still_valid = self._vouch is not None
        elif principal.authenticated:
            still_valid = self.passwords is not None and self.passwords.knows(principal.name)
        else:
            still_valid = self.anonymous
        if not still_valid:
            challenge = self._challenge(caller, error="invalid_token")
            error = Unauthorized("the token's user may no longer log in", headers=challenge)
            raise self._deny(error, "bad_token", caller, principal.name)
        return principal

    def _unauthorized(self, caller: Caller, reason: str, message: str) -> RegistryError:
        error = Unauthorized(message, headers=self._challenge(caller))
        return self._deny(error, reason, caller, "-")

    @staticmethod
    def _challenge(caller: Caller, name: str | None = None, error: str = "") -> dict[str, str]:
        value = f'Bearer realm="{caller.realm}",service="{SERVICE}"'
        if name is not None:
            value += f',scope="repository:{name}:pull"'
        if error:
            value += f',error="{error}"'
        return {"WWW-Authenticate": value}

    def _deny(
        self,
        error: RegistryError,
        reason: str,
        caller: Caller,
        user: str,
        target: Target | None = None,
    ) -> RegistryError:
        self._metrics.auth_denied.labels(reason).inc()
        audit.warning(
            "denied %s: user=%s client=%s upstream=%s repository=%s asked=%s -> %d %s",
            reason,
            _shown(user),
            caller.address,
            target.upstream if target else "-",
            target.repository if target else "-",
            caller.asked,
            error.http_status,
            error.error_code,
        )
        return error


def _shown(user: str) -> str:
    # A user name as typed, cut short and quoted: a client chooses it.
    return repr(user[:64])


def _basic(value: str) -> Credentials | None:
    """Basic credentials decoded, or None when they are not ``base64(user:password)``."""
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = text.partition(":")
    return Credentials(user, password) if sep else None


def _split(authorization: str) -> tuple[str, str]:
    """An Authorization header as (lowercase scheme, credentials)."""
    scheme, _, value = authorization.strip().partition(" ")
    return scheme.lower(), value
