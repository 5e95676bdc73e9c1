"""Upstream authentication: htpasswd Basic, and Bearer tokens from a token server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.upstreams import Upstream


def test_basic_auth_upstream_with_credentials(
    basic_upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = regcache_factory({"upstreams": [basic_upstream.entry("docker.io")]})
    image = basic_upstream.images.small
    pulled = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "out")
    assert pulled.manifest == image.manifest
    for digest in image.layer_digests:
        assert pulled.blob(digest) == (image.layout_dir / "blobs/sha256" / digest[7:]).read_bytes()
    # Learning the challenge costs one 401, on the first request only.
    assert proxy.metric("regcache_upstream_requests_total", status="401") == 1


def test_basic_auth_upstream_without_credentials_is_a_clean_401(
    basic_upstream: Upstream, regcache_factory: RegcacheFactory
) -> None:
    proxy = regcache_factory({"upstreams": [basic_upstream.entry("docker.io", creds=None)]})
    response = proxy.get("/v2/library/small/manifests/1.0")
    assert response.status == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_bearer_tokens_are_fetched_once_per_scope(
    token_upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    tokens = token_upstream.token_server
    assert tokens is not None
    proxy = regcache_factory({"upstreams": [token_upstream.entry("docker.io")]})
    before = len(tokens.requests_for("alice"))
    image = token_upstream.images.app
    pulled = skopeo.pull(proxy.ref("org/app", "1.0"), tmp_path / "app")
    assert pulled.manifest == image.manifest
    requests = tokens.requests_for("alice")[before:]
    assert [r.scopes for r in requests] == [("repository:org/app:pull",)]

    # A different repository is a different scope: one more token, then it is cached too.
    skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "small")
    skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "small-again")
    scopes = [r.scopes for r in tokens.requests_for("alice")[before:]]
    assert scopes == [("repository:org/app:pull",), ("repository:library/small:pull",)]


def test_anonymous_bearer_pull_of_public_repository(
    token_upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = regcache_factory({"upstreams": [token_upstream.entry("docker.io", creds=None)]})
    pulled = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "small")
    assert pulled.manifest == token_upstream.images.small.manifest
    # org/app is not public: the registry refuses the anonymous token, cleanly.
    response = proxy.get("/v2/org/app/manifests/1.0")
    assert response.status == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("password", ["wrong"])
def test_bearer_with_wrong_password_is_unauthorized(
    token_upstream: Upstream, regcache_factory: RegcacheFactory, password: str
) -> None:
    proxy = regcache_factory(
        {"upstreams": [token_upstream.entry("docker.io", creds=("alice", password))]}
    )
    response = proxy.get("/v2/org/app/manifests/1.0")
    assert response.status == 401
    body = response.json()
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert "Traceback" not in response.body.decode()
