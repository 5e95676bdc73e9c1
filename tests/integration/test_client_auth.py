"""Client logins against the real process: skopeo with --src-creds does the Bearer token
dance with regcache's own /token by itself; an htpasswd file as Debian's htpasswd -B writes it
(``$2y$`` entries); access rules in the YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.htpasswd import htpasswd_file
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream

USERS = {"ci": "ci-Passw0rd", "bob": "bob-Passw0rd"}


@pytest.fixture
def secured(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> RegcacheProcess:
    return regcache_factory(
        {
            "upstreams": [upstream.entry("docker.io")],
            "auth": {"htpasswd": str(htpasswd_file(tmp_path, USERS)), "anonymous": False},
            "access": [
                {"repositories": ["docker.io/org/**"], "users": ["ci"]},
                {"repositories": ["docker.io/library/**"], "users": ["authenticated"]},
            ],
        }
    )


def test_skopeo_pulls_through_the_token_flow(
    secured: RegcacheProcess, upstream: Upstream, tmp_path: Path
) -> None:
    creds = ("ci", USERS["ci"])
    pulled = skopeo.pull(secured.ref("org/app", "1.0"), tmp_path / "app", creds=creds)
    assert pulled.manifest == upstream.images.app.manifest
    small = skopeo.pull(secured.ref("small", "1.0"), tmp_path / "small", creds=creds)
    assert small.manifest == upstream.images.small.manifest
    assert secured.metric("regcache_auth_logins_total", method="token") >= 2
    # skopeo met the challenge first, then came back with regcache's token.
    assert secured.metric("regcache_auth_denied_total", reason="no_credentials") >= 1
    assert "Traceback" not in secured.log_text()
    assert USERS["ci"] not in secured.log_text()


def test_skopeo_without_credentials_is_refused(secured: RegcacheProcess, tmp_path: Path) -> None:
    with pytest.raises(skopeo.SkopeoError) as info:
        skopeo.pull(secured.ref("small", "1.0"), tmp_path / "out")
    assert "401" in info.value.stderr or "unauthorized" in info.value.stderr.lower()
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_skopeo_with_a_user_the_rules_refuse(secured: RegcacheProcess, tmp_path: Path) -> None:
    creds = ("bob", USERS["bob"])
    skopeo.pull(secured.ref("small", "1.0"), tmp_path / "small", creds=creds)
    with pytest.raises(skopeo.SkopeoError):
        skopeo.pull(secured.ref("org/app", "1.0"), tmp_path / "app", creds=creds)
    with pytest.raises(skopeo.SkopeoError):
        skopeo.pull(secured.ref("small", "1.0"), tmp_path / "bad", creds=("bob", "wrong"))
    assert secured.metric("regcache_auth_denied_total", reason="bad_credentials") >= 1
    direct = secured.get(
        "/v2/org/app/manifests/1.0", {"Authorization": "Basic Ym9iOmJvYi1QYXNzdzByZA=="}
    )
    assert direct.status == 403
    assert direct.json()["errors"][0]["code"] == "DENIED"
    assert secured.get("/metrics").status == 200
