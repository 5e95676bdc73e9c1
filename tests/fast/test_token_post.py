"""POST /token, OAuth2's password grant as containerd sends it when it has credentials: the
same checks, rate limit, audit and metrics as GET /token, and 4xx for anything else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

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
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import Answer, InProcessRegcache

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
WRONG_PASSWORD = "wrong-Pa55word-never-logged"


@pytest.fixture
async def secured(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> InProcessRegcache:
    settings = auth_settings(tmp_path, auth_anonymous=False)
    return await make_proxy(upstreams=two_upstreams(registry.url), **settings)


def grant(user: str, password: str, *scopes: str, **extra: str) -> bytes:
    """The form containerd's FetchTokenWithOAuth posts."""
    fields = {
        "grant_type": "password",
        "username": user,
        "password": password,
        "service": "regcache",
        "client_id": "containerd-client",
        "scope": " ".join(scopes),
        **extra,
    }
    return urlencode(fields).encode()


async def post(regcache: InProcessRegcache, body: bytes, headers: dict[str, str] = FORM) -> Answer:
    return await regcache.request("POST", "/token", headers, body)


def no_exception_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_password_grant_issues_a_token_for_what_the_rules_allow(
    secured: InProcessRegcache, registry: FakeRegistry
) -> None:
    acme = registry.push_image("acme/app", "1.0")
    body = grant("alice", USERS["alice"], "repository:gh/acme/app:pull", "repository:x/y:pull")

    answer = await post(secured, body)

    assert answer.status == 200, answer.body
    assert answer.headers["Cache-Control"] == "no-store"
    document = answer.json()
    assert document["access_token"] == document["token"]
    assert document["expires_in"] == 300
    assert document["issued_at"].endswith("Z")
    claims = jwt.decode(document["token"], TOKEN_SECRET, ["HS256"], audience="regcache")
    assert claims["sub"] == "alice"
    assert [entry["name"] for entry in claims["access"]] == ["gh/acme/app"]
    manifest = await secured.get(
        f"/v2/gh/acme/app/manifests/{acme.tag}",
        {"Accept": OCI_MANIFEST, **bearer(document["token"])},
    )
    assert manifest.status == 200
    assert manifest.body == acme.manifest
    assert await secured.metric("regcache_auth_logins_total", method="token") == 1


async def test_wrong_password_is_401_counted_and_never_logged(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = await post(secured, grant("alice", WRONG_PASSWORD, "repository:library/app:pull"))
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="regcache"'
    assert await secured.metric("regcache_auth_denied_total", reason="bad_credentials") == 1
    assert await secured.metric("regcache_auth_logins_total", method="token") == 0
    assert "denied bad_credentials: user='alice'" in caplog.text
    assert "token POST" in caplog.text
    assert WRONG_PASSWORD not in caplog.text
    no_exception_logged(caplog)


@pytest.mark.parametrize(
    "fields",
    [
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "password", "password": USERS["alice"]},
        {"grant_type": "password", "username": "", "password": USERS["alice"]},
    ],
    ids=["no password", "no username", "empty username"],
)
async def test_missing_credentials_are_a_malformed_login(
    secured: InProcessRegcache, fields: dict[str, str]
) -> None:
    assert_oci_error(await post(secured, urlencode(fields).encode()), 401, "UNAUTHORIZED")
    assert await secured.metric("regcache_auth_denied_total", reason="malformed") == 1


@pytest.mark.parametrize(
    ("fields", "oauth_error"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "x"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"username": "alice", "password": USERS["alice"]}, "unsupported_grant_type"),
    ],
    ids=["refresh_token", "client_credentials", "no grant_type"],
)
async def test_other_grants_are_refused_with_400(
    secured: InProcessRegcache, fields: dict[str, str], oauth_error: str
) -> None:
    answer = await post(secured, urlencode(fields).encode())
    assert_oci_error(answer, 400, "UNSUPPORTED")
    assert answer.json()["errors"][0]["detail"] == {"error": oauth_error}


async def chunks(body: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (grant("alice", "p" * 9000), FORM, 413),
        (grant("alice", USERS["alice"]), {"Content-Type": "application/json"}, 415),
        (grant("alice", USERS["alice"]), {}, 415),
        (b"grant_type=password&username=alice&password=\xff\xfe", FORM, 400),
        (b"grant_type=password&username=%ff%fe&password=x", FORM, 400),
        (b"&".join(b"f%d=1" % i for i in range(100)), FORM, 400),
    ],
    ids=["oversized", "json", "no content type", "not utf-8", "escaped not utf-8", "fields"],
)
async def test_hostile_bodies_get_a_4xx_oci_error(
    secured: InProcessRegcache,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    answer = await post(secured, body, headers)
    assert_oci_error(answer, status, "SIZE_INVALID" if status == 413 else "UNSUPPORTED")
    no_exception_logged(caplog)


async def test_oversized_chunked_body_is_cut_off_at_the_limit(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture
) -> None:
    body = grant("alice", USERS["alice"], *["repository:library/app:pull"] * 2000)
    async with secured.client.post("/token", data=chunks(body), headers=FORM) as response:
        assert response.status == 413
        assert (await response.json())["errors"][0]["code"] == "SIZE_INVALID"
        assert response.headers.get("Content-Length") != str(len(body))
    no_exception_logged(caplog)


async def test_rate_limit_counts_post_and_get_failures_together(
    secured: InProcessRegcache, caplog: pytest.LogCaptureFixture
) -> None:
    scope = "repository:library/app:pull"
    for _ in range(5):
        assert (await post(secured, grant("alice", WRONG_PASSWORD, scope))).status == 401
        wrong = basic("alice", WRONG_PASSWORD)
        assert (await secured.get(f"/token?scope={scope}", wrong)).status == 401
    limited = await post(secured, grant("alice", USERS["alice"], scope))
    assert_oci_error(limited, 429, "TOOMANYREQUESTS")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert await secured.metric("regcache_auth_denied_total", reason="rate_limited") == 1
    assert await secured.metric("regcache_auth_denied_total", reason="bad_credentials") == 10
    assert WRONG_PASSWORD not in caplog.text
    no_exception_logged(caplog)


async def test_without_auth_post_token_is_404(regcache: InProcessRegcache) -> None:
    body = grant("alice", USERS["alice"], "repository:library/app:pull")
    assert_oci_error(await post(regcache, body), 404, "UNSUPPORTED")


async def test_a_user_without_rules_of_his_own_gets_what_everyone_may(
    secured: InProcessRegcache, image: FakeImage
) -> None:
    # library/app is everyone's: bob, with no rule of his own, gets it too.
    answer = await post(secured, grant("bob", USERS["bob"], "repository:library/app:pull"))
    token = answer.json()["token"]
    manifest = await secured.get(
        f"/v2/library/app/manifests/{image.tag}", {"Accept": OCI_MANIFEST, **bearer(token)}
    )
    assert manifest.status == 200
