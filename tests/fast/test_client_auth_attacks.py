"""Attacks on client logins: each gets a 4xx OCI error document, nothing logs a traceback,
and no password or token reaches the log."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.fast.conftest import ProxyFactory
from tests.support.clientauth import (
    TOKEN_SECRET,
    USERS,
    assert_oci_error,
    auth_settings,
    basic,
    bearer,
    two_upstreams,
)
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

MANIFEST = "/v2/library/app/manifests/1.0"
SECRET_PASSWORD = "wrong-Pa55word-never-logged"


@pytest.fixture
async def secured(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path, image: FakeImage
) -> InProcessRegcache:
    # Anonymous off: a request that is refused credentials cannot slip in as anonymous.
    settings = auth_settings(tmp_path, auth_anonymous=False)
    return await make_proxy(upstreams=two_upstreams(registry.url), **settings)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    found: dict[str, Any] = {
        "iss": "regcache",
        "aud": "regcache",
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "access": [{"type": "repository", "name": "library/app", "actions": ["pull"]}],
    }
    found.update(changes)
    return found


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ATTACKS: dict[str, tuple[str, str]] = {
    # name: (Authorization header, denial reason)
    "malformed base64": ("Basic !!!not-base64!!!", "malformed"),
    "no colon": (f"Basic {b64(b'alice')}", "malformed"),
    "not utf-8": (f"Basic {b64(bytes([255, 254]) + b':x')}", "malformed"),
    "oversized": ("Basic " + "QUFB" * 1900, "malformed"),
    "wrong scheme": ("Digest username=alice", "malformed"),
    "empty bearer": ("Bearer", "bad_token"),
    "bearer garbage": ("Bearer a.b.c garbage", "bad_token"),
    "expired token": (
        "Bearer " + jwt.encode(claims(exp=int(time.time()) - 60), TOKEN_SECRET, "HS256"),
        "expired_token",
    ),
    "another key": ("Bearer " + jwt.encode(claims(), b"x" * 40, "HS256"), "bad_token"),
    "alg none": ("Bearer " + unsigned(claims()), "bad_token"),
    "another audience": (
        "Bearer " + jwt.encode(claims(aud="docker.io"), TOKEN_SECRET, "HS256"),
        "bad_token",
    ),
    "user not in htpasswd": (
        "Bearer " + jwt.encode(claims(sub="mallory"), TOKEN_SECRET, "HS256"),
        "bad_token",
    ),
    "another repository's scope": (
        "Bearer "
        + jwt.encode(
            claims(access=[{"type": "repository", "name": "library/x", "actions": ["pull"]}]),
            TOKEN_SECRET,
            "HS256",
        ),
        "wrong_scope",
    ),
}


def no_exception_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_hostile_authorization_gets_a_4xx_oci_error(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    header, reason = ATTACKS[attack]
    answer = await secured.get(MANIFEST, {"Authorization": header})
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="')
    assert await secured.metric("regcache_auth_denied_total", reason=reason) == 1
    no_exception_logged(caplog)
    token = header.partition(" ")[2]
    if len(token) > 8:
        assert token not in caplog.text
    assert f"denied {reason}" in caplog.text


TOKEN_ATTACKS: dict[str, tuple[str, dict[str, str], int, str]] = {
    "no credentials": ("scope=repository:library/app:pull", {}, 401, "UNAUTHORIZED"),
    "bearer instead of basic": ("", bearer("abc"), 401, "UNAUTHORIZED"),
    "malformed base64": ("", {"Authorization": "Basic %%%"}, 401, "UNAUTHORIZED"),
    "wrong password": ("", basic("alice", SECRET_PASSWORD), 401, "UNAUTHORIZED"),
    "account of another user": ("account=bob", basic("alice", USERS["alice"]), 403, "DENIED"),
}


@pytest.mark.parametrize("attack", list(TOKEN_ATTACKS))
async def test_hostile_token_requests_get_a_4xx_oci_error(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    query, headers, status, code = TOKEN_ATTACKS[attack]
    answer = await secured.get(f"/token?service=regcache&{query}", headers)
    assert_oci_error(answer, status, code)
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="regcache"'
    no_exception_logged(caplog)
    assert SECRET_PASSWORD not in caplog.text


async def test_token_post_and_nonsense_scopes(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture
) -> None:
    # A POST that is no form at all (the password grant is tests/fast/test_token_post.py).
    assert_oci_error(await secured.request("POST", "/token"), 415, "UNSUPPORTED")
    nonsense = "&".join(
        f"scope={s}"
        for s in [
            "repository:../../etc/passwd:pull",
            "repository:library/app",
            "registry:catalog:*",
            "repository:LIBRARY/APP:pull",
            ":::",
            *[f"repository:library/a{i}:pull" for i in range(60)],
        ]
    )
    answer = await secured.get(f"/token?{nonsense}", basic("alice", USERS["alice"]))
    assert answer.status == 200
    granted = jwt.decode(answer.json()["token"], TOKEN_SECRET, ["HS256"], audience="regcache")
    names = [entry["name"] for entry in granted["access"]]
    # Only well-formed pull scopes the rules allow, and no more than 32 looked at.
    assert names == sorted(f"library/a{i}" for i in range(27))
    no_exception_logged(caplog)


async def test_eleventh_failed_login_in_a_minute_is_rate_limited(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = basic("alice", SECRET_PASSWORD)
    for _ in range(10):
        assert_oci_error(await secured.get(MANIFEST, wrong), 401, "UNAUTHORIZED")
    limited = await secured.get(MANIFEST, wrong)
    assert_oci_error(limited, 429, "TOOMANYREQUESTS")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Not even the right password gets through now, so guessing learns nothing more.
    right = basic("alice", USERS["alice"])
    assert_oci_error(await secured.get(MANIFEST, right), 429, "TOOMANYREQUESTS")
    token = await secured.get("/token?scope=repository:library/app:pull", right)
    assert_oci_error(token, 429, "TOOMANYREQUESTS")
    assert "Retry-After" in token.headers
    assert await secured.metric("regcache_auth_denied_total", reason="rate_limited") == 3
    assert SECRET_PASSWORD not in caplog.text
    no_exception_logged(caplog)


@pytest.mark.parametrize(
    ("headers", "realm"),
    [
        ({"Host": "cache.example.com:5000"}, "http://cache.example.com:5000/token"),
        (
            {"Host": "cache.example.com", "X-Forwarded-Proto": "https"},
            "https://cache.example.com/token",
        ),
        # Only an upgrade is honoured: a forged header never sends credentials over http.
        (
            {"Host": "cache.example.com", "X-Forwarded-Proto": "gopher"},
            "http://cache.example.com/token",
        ),
        # A Host that could close the quoted realm is not used at all.
        ({"Host": 'evil",service="x'}, None),
    ],
)
async def test_the_realm_comes_from_a_checked_host(
    secured: InProcessRegcache, headers: dict[str, str], realm: str | None
) -> None:
    answer = await secured.get("/v2/", headers)
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    expected = realm or f"{secured.url}/token"
    assert answer.headers["WWW-Authenticate"] == (f'Bearer realm="{expected}",service="regcache"')
