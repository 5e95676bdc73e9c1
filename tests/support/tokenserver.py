"""A Bearer token server for Distribution's ``auth.token`` mode (the Docker token protocol).

It runs on its own event loop in a background thread, so sync tests, async tests and the
processes they start can all use it. Tokens are RS256 JWTs whose header carries the signing
certificate in ``x5c``; the same self-signed certificate is the registry's ``rootcertbundle``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .certs import self_signed_ca
from .lifecycle import Started
from .ports import free_port
from .registry import TokenAuthSettings
from .threadedapp import ThreadedApp

DEFAULT_SERVICE = "regcache-test-registry"
DEFAULT_ISSUER = "regcache-test-token-issuer"


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``repository:library/x:pull,push``; names may hold a ``host:port/`` prefix."""
        type_, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not type_ or not name:
            raise ValueError(f"bad scope {text!r}")
        return cls(type_, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


class TokenRequest(NamedTuple):
    user: str | None  # None for an anonymous request
    scopes: tuple[str, ...]  # as requested, e.g. "repository:library/x:pull,push"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenServer(Started):
    """``GET /token?service=S&scope=repository:NAME:pull[,push]`` with HTTP Basic credentials,
    and the OAuth2 ``POST /token`` password grant (``oauth_post=False`` answers it 404).

    ``users`` maps user name to password; a known user is granted what it asks for, except
    ``push`` for users outside ``push_users`` (``None``: everybody may push). Anonymous
    requests get ``pull`` when ``allow_anonymous_pull`` is set or the repository starts with
    one of ``public_prefixes`` (Docker Hub's ``library/`` is such a case), otherwise an empty
    grant, which the registry then refuses. Wrong credentials get 401, as the protocol asks.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        work_dir: Path | None = None,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        allow_anonymous_pull: bool = False,
        public_prefixes: Collection[str] = (),
        push_users: Collection[str] | None = None,
        expires_in: int = 300,
        oauth_post: bool = True,
        port: int | None = None,
    ) -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.allow_anonymous_pull = allow_anonymous_pull
        self.public_prefixes = tuple(public_prefixes)
        self.push_users = None if push_users is None else frozenset(push_users)
        self.expires_in = expires_in
        self.oauth_post = oauth_post
        # Tests may set this while the server runs, to simulate a token service outage.
        self.fail_status: int | None = None
        self.oauth_posts = 0  # POST /token requests, whatever their outcome
        self.port = port or free_port()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="regcache-tokens-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.token_requests: list[TokenRequest] = []
        self.rejected: int = 0  # requests answered 401
        self._requests_lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self_signed_ca(self.issuer, self._key)
        self.cert_path = self.work_dir / "token-cert.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self._server: ThreadedApp | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def rootcertbundle(self) -> Path:
        return self.cert_path

    def registry_settings(self) -> TokenAuthSettings:
        """The ``auth.token`` section of a registry that trusts this server."""
        return TokenAuthSettings(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            rootcertbundle=self.cert_path,
        )

    # -- tokens ---------------------------------------------------------------------------

    def issue(self, user: str | None, scopes: Collection[Scope], service: str | None) -> str:
        """A signed JWT granting ``scopes`` (already filtered by policy) to ``user``."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service or self.service,
            "exp": now + self.expires_in,
            # Back-dated so a registry whose clock reads slightly behind still accepts it.
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [
                {"type": s.type, "name": s.name, "actions": list(s.actions)} for s in scopes
            ],
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    @staticmethod
    def decode_claims(token: str) -> dict[str, Any]:
        """The claims of a token, unverified (for assertions in tests)."""
        claims: dict[str, Any] = json.loads(_b64url_decode(token.split(".")[1]))
        return claims

    def _grant(self, user: str | None, requested: tuple[Scope, ...]) -> list[Scope]:
        granted = []
        for scope in requested:
            if user is None:
                public = self.allow_anonymous_pull or scope.name.startswith(self.public_prefixes)
                allowed = {"pull"} if public else set()
            elif self.push_users is None or user in self.push_users:
                allowed = {"pull", "push", "delete", "*"}
            else:
                allowed = {"pull"}
            if scope.type != "repository":
                allowed = set()
            actions = tuple(a for a in scope.actions if a in allowed)
            granted.append(Scope(scope.type, scope.name, actions))
        return granted

    def _authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, user); no header is an anonymous, acceptable request."""
        if header is None:
            return True, None
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return False, user
        return True, user

    def _unauthorized(self) -> web.Response:
        with self._requests_lock:
            self.rejected += 1
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="regcache-test-token-server"'},
        )

    def _grant_response(
        self, user: str | None, scope_texts: list[str], service: str | None, oauth: bool
    ) -> web.Response:
        try:
            scopes = tuple(Scope.parse(s) for s in scope_texts)
        except ValueError as exc:
            error = {"code": "INVALID", "message": str(exc)}
            return web.json_response({"errors": [error]}, status=400)
        with self._requests_lock:
            self.token_requests.append(TokenRequest(user, tuple(str(s) for s in scopes)))
        token = self.issue(user, self._grant(user, scopes), service)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": _rfc3339(time.time()),
        }
        if oauth:
            body["scope"] = " ".join(scope_texts)
        else:
            body["token"] = token  # the Docker GET flow's name; newer clients read access_token
        return web.json_response(body)

    async def _handle_get(self, request: web.Request) -> web.Response:
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="token server failure (test)")
        ok, user = self._authenticate(request.headers.get("Authorization"))
        if not ok:
            return self._unauthorized()
        scopes = request.query.getall("scope", [])
        return self._grant_response(user, scopes, request.query.get("service"), oauth=False)

    async def _handle_post(self, request: web.Request) -> web.Response:
        """The OAuth2 password grant that containerd tries before the GET flow."""
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="token server failure (test)")
        if not self.oauth_post:
            # What registries without the OAuth2 endpoint answer; clients then fall back to GET.
            return web.Response(status=404)
        with self._requests_lock:
            self.oauth_posts += 1
        form = await request.post()
        if form.get("grant_type") != "password":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return self._unauthorized()
        scopes = str(form.get("scope", "")).split()
        service = form.get("service")
        return self._grant_response(
            user, scopes, None if service is None else str(service), oauth=True
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._handle_get)
        app.router.add_post("/token", self._handle_post)
        self._server = ThreadedApp(app, self.port)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset_counts(self) -> None:
        with self._requests_lock:
            self.token_requests.clear()
            self.rejected = 0
            self.oauth_posts = 0

    def requests_for(self, user: str | None) -> list[TokenRequest]:
        with self._requests_lock:
            return [r for r in self.token_requests if r.user == user]

    def close(self) -> None:
        self.stop()
