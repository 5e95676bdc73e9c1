"""Pass-through credentials: on an upstream with ``credentials: passthrough`` each client's own
login goes upstream, and the upstream decides what that client reads, cached or not.

The fake registry here hands out Bearer tokens as Distribution's token servers do: to alice and
bob (and robot, the credentials configured in regcache), each for its own repositories only.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fast.conftest import ProxyFactory, blob_path
from tests.support.clientauth import (
    CHALLENGE,
    USERS,
    assert_oci_error,
    auth_settings,
    basic,
    bearer,
    two_upstreams,
)
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, TokenAuth
from tests.support.inproxy import InProcessRegcache

UPSTREAM_USERS = {"alice": "alice-upstream-pw", "bob": "bob-upstream-pw", "robot": "robot-pw"}
ALICE = basic("alice", UPSTREAM_USERS["alice"])
BOB = basic("bob", UPSTREAM_USERS["bob"])
MALLORY = basic("alice", "guessed")
PASSTHROUGH = {"credentials": "passthrough", "username": "robot", "password": "robot-pw"}


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    auth = TokenAuth(
        users=dict(UPSTREAM_USERS),
        anonymous=False,
        grants={"alice": ("acme/app",), "bob": ("bob/tools",), "robot": ("acme/app",)},
        base_open=False,
    )
    async with FakeRegistry(token=auth) as fake:
        yield fake


@pytest.fixture
def acme(registry: FakeRegistry) -> FakeImage:
    return registry.push_image("acme/app", "1.0")


async def token(regcache: InProcessRegcache, name: str, login: dict[str, str]) -> dict[str, str]:
    answer = await regcache.get(f"/token?service=regcache&scope=repository:{name}:pull", login)
    assert answer.status == 200, answer.body
    return bearer(answer.json()["token"])


async def pull(regcache: InProcessRegcache, image: FakeImage, auth: dict[str, str]) -> None:
    name = image.repository
    accept = {"Accept": OCI_MANIFEST, **auth}
    manifest = await regcache.get(f"/v2/{name}/manifests/{image.tag}", accept)
    assert manifest.status == 200, manifest.body
    assert manifest.body == image.manifest
    for digest, layer in zip(image.layer_digests, image.layers, strict=True):
        answer = await regcache.get(blob_path(digest, name), auth)
        assert answer.status == 200, answer.body
        assert answer.body == layer


async def refused_everything(
    regcache: InProcessRegcache, image: FakeImage, auth: dict[str, str], status: int, code: str
) -> None:
    name = image.repository
    paths = [
        f"/v2/{name}/manifests/{image.tag}",
        f"/v2/{name}/manifests/{image.digest}",
        *(blob_path(digest, name) for digest in image.layer_digests),
    ]
    for path in paths:
        for method in (regcache.get, regcache.head):
            answer = await method(path, {"Accept": OCI_MANIFEST, **auth})
            assert answer.status == status, (path, answer.status)
            if method == regcache.get:
                assert_oci_error(answer, status, code)
                assert not any(layer in answer.body for layer in image.layers)


def upstream_logins(registry: FakeRegistry) -> set[str]:
    """The users whose credentials reached the upstream's token endpoint."""
    users = set()
    for seen in registry.seen:
        sent = seen.headers.get("Authorization", "")
        if seen.path == "/token" and sent.startswith("Basic "):
            users.add(base64.b64decode(sent[6:]).decode().partition(":")[0])
    return users


async def test_each_client_pulls_with_its_own_credentials_and_never_regcaches(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    regcache = await make_proxy(**PASSTHROUGH)
    await pull(regcache, acme, await token(regcache, "acme/app", ALICE))
    await pull(regcache, acme, ALICE)  # Basic straight to /v2/ too
    assert upstream_logins(registry) == {"alice"}
    assert await regcache.metric("regcache_auth_logins_total", method="token") == 1


async def test_a_client_the_upstream_refuses_gets_nothing_even_when_cached(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    regcache = await make_proxy(**PASSTHROUGH)
    await pull(regcache, acme, ALICE)
    # bob is a user of the upstream, but not of acme/app: regcache holds all of it, still no.
    await refused_everything(regcache, acme, await token(regcache, "acme/app", BOB), 403, "DENIED")
    await refused_everything(regcache, acme, BOB, 403, "DENIED")
    # No credentials: a challenge, so that a client with a login can come back with it.
    await refused_everything(regcache, acme, {}, 401, "UNAUTHORIZED")
    answer = await regcache.get(f"/v2/acme/app/manifests/{acme.digest}")
    challenge = CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert challenge is not None
    assert 'scope="repository:acme/app:pull"' in challenge["rest"]
    # A wrong password is no login at all.
    assert_oci_error(await regcache.get("/token?service=regcache", MALLORY), 401, "UNAUTHORIZED")
    assert_oci_error(
        await regcache.get(f"/v2/acme/app/manifests/{acme.digest}", MALLORY), 401, "UNAUTHORIZED"
    )
    assert await regcache.metric("regcache_auth_denied_total", reason="upstream_refused") >= 8
    assert await regcache.metric("regcache_auth_denied_total", reason="bad_credentials") == 2


async def test_the_upstreams_answer_is_remembered_for_passthrough_ttl(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    regcache = await make_proxy(**PASSTHROUGH, passthrough_ttl=30.0)
    await pull(regcache, acme, ALICE)
    bob = await token(regcache, "acme/app", BOB)
    answer = await regcache.get(f"/v2/acme/app/manifests/{acme.digest}", bob)
    assert_oci_error(answer, 403, "DENIED")
    asked = len(registry.seen)
    await pull(regcache, acme, ALICE)
    for _ in range(3):
        answer = await regcache.get(blob_path(acme.layer_digests[0], "acme/app"), bob)
        assert_oci_error(answer, 403, "DENIED")
    assert len(registry.seen) == asked


async def test_with_no_ttl_every_request_is_asked(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    regcache = await make_proxy(**PASSTHROUGH, passthrough_ttl=0.0)
    await pull(regcache, acme, ALICE)
    heads = registry.count("HEAD", f"/v2/acme/app/manifests/{acme.tag}")
    await pull(regcache, acme, ALICE)
    assert registry.count("HEAD", f"/v2/acme/app/manifests/{acme.tag}") == heads + 1
    for digest in acme.layer_digests:
        assert registry.count("HEAD", blob_path(digest, "acme/app")) == 2


async def test_v2_challenges_and_a_login_is_checked_upstream(
    make_proxy: ProxyFactory, registry: FakeRegistry
) -> None:
    regcache = await make_proxy(**PASSTHROUGH)
    answer = await regcache.get("/v2/")
    assert answer.status == 401
    assert CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert (await regcache.get("/v2/", ALICE)).status == 200
    assert (await regcache.get("/v2/", BOB)).status == 200
    assert_oci_error(await regcache.get("/v2/", MALLORY), 401, "UNAUTHORIZED")
    # docker login asks /token with no scope; an anonymous token answers an anonymous client.
    assert (await regcache.get("/token?service=regcache", ALICE)).status == 200
    assert_oci_error(await regcache.get("/token?service=regcache", MALLORY), 401, "UNAUTHORIZED")
    assert (await regcache.get("/token?service=regcache")).status == 200


async def test_a_passthrough_login_is_no_regcache_login(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage, tmp_path: Path
) -> None:
    """docker.io is served with regcache's configured robot; ghcr.io passes through. bob, an
    account of the upstream's but not of regcache's, gets nothing that regcache guards."""
    registry.push_image("library/app", "1.0")
    docker, ghcr = two_upstreams(registry.url)
    upstreams = (
        replace(docker, username="robot", password="robot-pw"),
        replace(ghcr, credentials="passthrough"),
    )
    settings = auth_settings(tmp_path, auth_anonymous=False)
    regcache = await make_proxy(upstreams=upstreams, **settings)
    answer = await regcache.get("/v2/library/app/manifests/1.0", BOB)
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    bob = await token(regcache, "library/app", BOB)
    assert_oci_error(await regcache.get("/v2/library/app/manifests/1.0", bob), 401, "UNAUTHORIZED")
    # regcache's alice may pull ghcr.io/acme by the rules, but her regcache password never goes
    # upstream: there she is anonymous, and the upstream wants a login.
    regcache_alice = basic("alice", USERS["alice"])
    answer = await regcache.get("/v2/ghcr.io/acme/app/manifests/1.0", regcache_alice)
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    assert "alice" not in upstream_logins(registry)
    # The upstream's alice, through the rules (which name her) and the upstream.
    upstream_alice = await token(regcache, "ghcr.io/acme/app", ALICE)
    answer = await regcache.get("/v2/ghcr.io/acme/app/manifests/1.0", upstream_alice)
    assert answer.status == 200
    assert answer.body == acme.manifest


async def test_cached_content_waits_for_the_upstreams_word(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    """Within the ttl a client the upstream accepted is served with the upstream down; after
    it, nobody is, since nobody can be checked."""
    regcache = await make_proxy(**PASSTHROUGH, passthrough_ttl=0.5)
    await pull(regcache, acme, ALICE)
    await registry.stop()
    await pull(regcache, acme, ALICE)
    await asyncio.sleep(0.6)
    answer = await regcache.get(blob_path(acme.layer_digests[0], "acme/app"), ALICE)
    assert_oci_error(answer, 503, "UNAVAILABLE")
    await registry.start()
    await pull(regcache, acme, ALICE)


async def test_tag_lists_go_upstream_as_the_client(
    make_proxy: ProxyFactory, registry: FakeRegistry, acme: FakeImage
) -> None:
    regcache = await make_proxy(**PASSTHROUGH)
    answer = await regcache.get("/v2/acme/app/tags/list", ALICE)
    assert answer.status == 200
    assert answer.json()["tags"] == ["1.0"]
    assert_oci_error(await regcache.get("/v2/acme/app/tags/list", BOB), 403, "DENIED")
    assert_oci_error(await regcache.get("/v2/acme/app/tags/list"), 401, "UNAUTHORIZED")
