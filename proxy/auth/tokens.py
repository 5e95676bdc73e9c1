"""regcache's own bearer tokens: short-lived JWTs signed with HS256 (PyJWT).

The key is 32 random bytes made at start unless ``auth.token_key_file`` gives one, so
replicas behind one address share it only through that file. A token names its user and
the repositories it may pull, as the client named them in the token request.

A user that a passthrough upstream vouched for carries its credentials in the token for
that upstream's requests, encrypted with Fernet (AES-CBC and HMAC, from ``cryptography``)
under a key derived from the signing key: a JWT's claims are only base64, and the token
passes through clients' logs and credential stores.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# PyJWT and cryptography are imported in the methods: a server without logins never loads
# them (a tenth of a second at start, megabytes per worker), and the handlers import this
# module all the same. Once loaded, such an import is a dictionary lookup.
from proxy.auth.rules import Principal
from proxy.config.authfiles import ANONYMOUS, TokenKey
from proxy.model import Credentials

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
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        # A key of its own, so neither use of the signing key can weaken the other.
        derived = HKDF(hashes.SHA256(), 32, None, b"regcache passthrough credentials")
        self._sealer = Fernet(base64.urlsafe_b64encode(derived.derive(self._key)))

    def issue(self, principal: Principal, repositories: Iterable[str]) -> IssuedToken:
        """A token for ``principal``, with who vouched for it and its credentials, if any."""
        import jwt

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": SERVICE,
            "sub": principal.name,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "access": [
                {"type": "repository", "name": name, "actions": ["pull"]}
                for name in sorted(set(repositories))
            ],
        }
        if principal.vouched_by is not None:
            claims["via"] = principal.vouched_by
        if principal.credentials is not None:
            pair = [principal.credentials.username, principal.credentials.password]
            claims["pt"] = self._sealer.encrypt(json.dumps(pair).encode()).decode("ascii")
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
        import jwt

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
        via = claims.get("via")
        principal = Principal(
            user,
            authenticated=user != ANONYMOUS,
            scopes=names,
            vouched_by=via if isinstance(via, str) else None,
            credentials=self._unsealed(claims.get("pt")),
        )
        return principal, float(claims["exp"])

    def _unsealed(self, sealed: object) -> Credentials | None:
        if sealed is None:
            return None
        from cryptography.fernet import InvalidToken

        try:
            pair = json.loads(self._sealer.decrypt(str(sealed).encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError):
            raise TokenRejected("bad_token", "the bearer token is not valid") from None
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise TokenRejected("bad_token", "the bearer token is not valid")
        return Credentials(pair[0], pair[1])
