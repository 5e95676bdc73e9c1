"""Client logins and access rules, as a runtime meets them: the challenge, the token flow,
Basic credentials, anonymous pulls, and rules on the canonical name however it was routed."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.server.app import CONFIG
from proxy.server.reload import reload_all
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
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

ALICE = basic("alice", USERS["alice"])
BOB = basic("bob", USERS["bob"])


@pytest.fixture
async def secured(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> InProcessRegcache:
    return await make_proxy(upstreams=two_upstreams(registry.url), **auth_settings(tmp_path))


@pytest.fixture
def acme(registry: FakeRegistry) -> FakeImage:
    return registry.push_image("acme/app", "1.0")


async def pull(
    regcache: InProcessRegcache, image: FakeImage, name: str, headers: dict[str, str]
) -> None:
    manifest = await regcache.get(
        f"/v2/{name}/manifests/{image.tag}", {"Accept": OCI_MANIFEST, **headers}
    )
    assert manifest.status == 200, manifest.body
    assert manifest.body == image.manifest
    for digest, layer in zip(image.layer_digests, image.layers, strict=True):
        answer = await regcache.get(blob_path(digest, name), headers)
        assert answer.status == 200
        assert answer.body == layer


async def token(regcache: InProcessRegcache, scope: str, headers: dict[str, str]) -> str:
    answer = await regcache.get(f"/token?service=regcache&scope={scope}", headers)
    assert answer.status == 200, answer.body
    document = answer.json()
    assert document["token"] == document["access_token"]
    assert document["expires_in"] == 300
    assert document["issued_at"].endswith("Z")
    value: str = document["token"]
    return value


async def test_no_credentials_get_the_challenge_for_regcaches_own_token_endpoint(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    regcache = await make_proxy(**auth_settings(tmp_path, auth_anonymous=False, access=None))
    for path in ("/v2/", "/v2/library/app/manifests/1.0"):
        answer = await regcache.get(path)
        assert_oci_error(answer, 401, "UNAUTHORIZED")
        challenge = CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
        assert challenge is not None, answer.headers["WWW-Authenticate"]
        assert challenge["realm"] == f"{regcache.url}/token"
    assert not registry.seen  # refused before anything was resolved
    assert await regcache.metric("regcache_auth_denied_total", reason="no_credentials") == 2
    # docker login checks credentials with the base endpoint.
    assert (await regcache.get("/v2/", ALICE)).status == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert (await regcache.get(open_path)).status == 200


async def test_token_flow_then_pull(secured: InProcessRegcache, acme: FakeImage) -> None:
    value = await token(secured, "repository:ghcr.io/acme/app:pull", ALICE)
    await pull(secured, acme, "ghcr.io/acme/app", bearer(value))
    assert (await secured.get("/v2/", bearer(value))).status == 200
    assert await secured.metric("regcache_auth_logins_total", method="token") == 1


async def test_token_grants_only_what_the_rules_allow(
    secured: InProcessRegcache, acme: FakeImage
) -> None:
    scopes = "repository:ghcr.io/acme/app:pull,push&scope=repository:ghcr.io/acme/app:pull"
    value = await token(secured, scopes, BOB)
    answer = await secured.get("/v2/ghcr.io/acme/app/manifests/1.0", bearer(value))
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    assert 'scope="repository:ghcr.io/acme/app:pull"' in answer.headers["WWW-Authenticate"]


async def test_basic_straight_to_v2(secured: InProcessRegcache, acme: FakeImage) -> None:
    await pull(secured, acme, "ghcr.io/acme/app", ALICE)
    assert await secured.metric("regcache_auth_logins_total", method="basic") >= 1


async def test_wrong_password_is_401_with_the_challenge(secured: InProcessRegcache) -> None:
    answer = await secured.get("/v2/library/app/manifests/1.0", basic("alice", "wrong"))
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    assert CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert await secured.metric("regcache_auth_denied_total", reason="bad_credentials") == 1
    unknown = await secured.get("/v2/library/app/manifests/1.0", basic("mallory", "x"))
    assert_oci_error(unknown, 401, "UNAUTHORIZED")
    refused = await secured.get("/token?scope=repository:library/app:pull", basic("bob", "x"))
    assert_oci_error(refused, 401, "UNAUTHORIZED")
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="regcache"'


async def test_anonymous_pulls_library_but_not_acme(
    secured: InProcessRegcache, image: FakeImage, acme: FakeImage
) -> None:
    await pull(secured, image, "library/app", {})
    anonymous = await token(secured, "repository:library/app:pull", {})
    await pull(secured, image, "library/app", bearer(anonymous))
    answer = await secured.get("/v2/ghcr.io/acme/app/manifests/1.0")
    assert_oci_error(answer, 401, "UNAUTHORIZED")
    challenge = CHALLENGE.fullmatch(answer.headers["WWW-Authenticate"])
    assert challenge is not None
    assert challenge["rest"] == ',scope="repository:ghcr.io/acme/app:pull"'
    assert await secured.metric("regcache_auth_denied_total", reason="rule") == 1
    # An anonymous token names nothing the rules refuse anonymous users.
    none = await token(secured, "repository:ghcr.io/acme/app:pull", {})
    answer = await secured.get("/v2/ghcr.io/acme/app/manifests/1.0", bearer(none))
    assert_oci_error(answer, 401, "UNAUTHORIZED")


async def test_two_users_with_different_rules(
    secured: InProcessRegcache, image: FakeImage, acme: FakeImage
) -> None:
    await pull(secured, acme, "ghcr.io/acme/app", ALICE)
    answer = await secured.get("/v2/ghcr.io/acme/app/manifests/1.0", BOB)
    assert_oci_error(answer, 403, "DENIED")
    await pull(secured, image, "library/app", BOB)  # "*" includes bob


# Every form naming ghcr.io/acme/app: ?ns=, path prefix, alias; and the default upstream.
FORMS = [
    ("acme/app", "?ns=ghcr.io"),
    ("ghcr.io/acme/app", ""),
    ("gh/acme/app", ""),
]


@pytest.mark.parametrize(("name", "query"), FORMS)
@pytest.mark.parametrize("kind", ["manifest", "blob", "tags"])
async def test_rules_apply_to_the_canonical_name_whatever_the_form(
    secured: InProcessRegcache, acme: FakeImage, name: str, query: str, kind: str
) -> None:
    path = {
        "manifest": f"/v2/{name}/manifests/1.0",
        "blob": blob_path(acme.layer_digests[0], name),
        "tags": f"/v2/{name}/tags/list",
    }[kind] + query
    assert_oci_error(await secured.get(path, BOB), 403, "DENIED")
    assert_oci_error(await secured.get(path), 401, "UNAUTHORIZED")
    assert (await secured.get(path, ALICE)).status == 200


async def test_rules_apply_to_the_default_upstream(
    secured: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    # "app" on the default docker.io is docker.io/library/app: allowed to anyone.
    await pull(secured, image, "app", {})
    registry.push_image("org/tool", "2.0")
    # docker.io/org/tool matches no rule: denied, to users as well.
    assert_oci_error(await secured.get("/v2/org/tool/manifests/2.0"), 401, "UNAUTHORIZED")
    assert_oci_error(await secured.get("/v2/org/tool/manifests/2.0", ALICE), 403, "DENIED")
    # A path prefix cannot smuggle acme's name past the rules through docker.io either.
    answer = await secured.get("/v2/ghcr.io/acme/app/manifests/1.0?ns=docker.io", ALICE)
    assert_oci_error(answer, 403, "DENIED")


async def test_without_access_rules_every_user_may_pull_everything(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path, acme: FakeImage
) -> None:
    regcache = await make_proxy(
        upstreams=two_upstreams(registry.url),
        **auth_settings(tmp_path, access=None, auth_anonymous=False),
    )
    await pull(regcache, acme, "ghcr.io/acme/app", BOB)
    assert_oci_error(await regcache.get("/v2/ghcr.io/acme/app/tags/list"), 401, "UNAUTHORIZED")


async def test_without_auth_there_is_no_token_endpoint(regcache: InProcessRegcache) -> None:
    assert_oci_error(await regcache.get("/token?scope=x"), 404, "UNSUPPORTED")
    assert (await regcache.get("/v2/")).status == 200


async def test_sighup_rereads_the_htpasswd_file_and_a_broken_one_keeps_the_old_users(
    secured: InProcessRegcache, tmp_path: Path
) -> None:
    assert secured.app is not None
    assert (await secured.get("/v2/", ALICE)).status == 200  # now remembered as a success
    htpasswd = secured.app[CONFIG].auth_htpasswd
    assert htpasswd is not None
    kept = htpasswd.path.read_text()
    htpasswd.path.write_text("not an htpasswd line\n")
    reload_all(secured.app)
    assert (await secured.get("/v2/", ALICE)).status == 200
    htpasswd.path.write_text("\n".join(line for line in kept.splitlines() if "alice" not in line))
    reload_all(secured.app)
    assert_oci_error(await secured.get("/v2/", ALICE), 401, "UNAUTHORIZED")
    assert (await secured.get("/v2/", BOB)).status == 200
