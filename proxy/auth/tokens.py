"""regcache's own bearer tokens: short-lived JWTs signed with HS256 (PyJWT).

The key is 32 random bytes made at start unless ``auth.token_key_file`` gives one, so
replicas behind one address share it only through that file. A token names its user and
the repositories it may pull, as the client named them in the token request.
"""

from __future__ import annotations

import datetime
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from proxy.auth.rules import Principal
from proxy.config.authfiles import ANONYMOUS, TokenKey

ISSUER = "regcache"
SERVICE = "regcache"
ALGORITHM = "HS256"
# Decoded tokens remembered so that a pull does not verify a signature per blob.
REMEMBER_SECONDS = 30.0
MAX_REMEMBERED = 10_000
MAX_TOKEN_LENGTH = 8192


class TokenRejected(Exception):
    """``reason`` is the denial metric's label: bad_token or expired_token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str

    def document(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at,
        }


class TokenAuthority:
    def __init__(self, key: TokenKey | None, ttl: float) -> None:
        self._key = key.secret if key is not None else secrets.token_bytes(32)
        self._ttl = max(1, int(ttl))
        self._remembered: dict[str, tuple[Principal, float]] = {}

    def issue(self, user: str, repositories: Iterable[str]) -> IssuedToken:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": SERVICE,
            "sub": user,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "access": [
                {"type": "repository", "name": name, "actions": ["pull"]}
                for name in sorted(set(repositories))
            ],
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
        return IssuedToken(token, self._ttl, issued.replace("+00:00", "Z"))

    def verify(self, token: str) -> Principal:
        now = time.time()
        remembered = self._remembered.get(token)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("bad_token", "the bearer token is too long")
        principal, expires = self._decode(token)
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered = {t: e for t, e in self._remembered.items() if e[1] > now}
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
        self._remembered[token] = (principal, min(expires, now + REMEMBER_SECONDS))
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            # One algorithm only: "none", or RS/ES with the key taken as a public key, never.
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=SERVICE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired_token", "the bearer token has expired") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("bad_token", "the bearer token is not valid") from None
        user = claims.get("sub")
        access = claims.get("access", [])
        if not isinstance(user, str) or not isinstance(access, list):
            raise TokenRejected("bad_token", "the bearer token is not valid")
        names = frozenset(
            entry["name"]
            for entry in access
            if isinstance(entry, dict)
            and entry.get("type") == "repository"
            and isinstance(entry.get("name"), str)
            and "pull" in (entry.get("actions") or ())
        )
        principal = Principal(user, authenticated=user != ANONYMOUS, scopes=names)
        return principal, float(claims["exp"])
