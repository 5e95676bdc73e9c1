"""The chart's client logins, access rules and TLS settings: that the rendered config, with the
Secrets' files where the pod would have them, is what regcache's own loader
(``proxy.config.load_config``) makes of it, and the values the chart refuses.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.config import CliOverrides, Config, load_config
from proxy.config.access import AccessRule
from tests.support.certs import CertificateAuthority
from tests.support.chart import (
    ACCESS_RULES,
    FULLNAME,
    SHARED_BACKENDS,
    Chart,
    Rendered,
    pod_files,
    secured,
    tls_secret,
)
from tests.support.clientauth import USERS, write_htpasswd

TOKEN_KEY = "t" * 48


@pytest.fixture
def secrets(ca: CertificateAuthority, tmp_path: Path) -> dict[str, dict[str, str]]:
    """What the Secrets the values name would hold in the cluster."""
    htpasswd = write_htpasswd(tmp_path).read_text()
    return {
        "logins": {"users": htpasswd},
        "token-key": {"token-key": TOKEN_KEY},
        "regcache-tls": tls_secret(ca),
        "client-cas": {"ca.crt": ca.cert_pem.decode()},
        "replica-key": {"key": "r" * 48},
    }


def load(rendered: Rendered, root: Path, secrets: dict[str, dict[str, str]]) -> Config:
    return load_config(pod_files(rendered, root, secrets), {}, CliOverrides())


def volume(rendered: Rendered, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in rendered.pod_spec["volumes"] if v["name"] == name)
    return found


# -- what regcache loads ----------------------------------------------------------------------


def test_logins_rules_and_mutual_tls_reach_regcaches_loader(
    chart: Chart, tmp_path: Path, secrets: dict[str, dict[str, str]]
) -> None:
    rendered = chart.render(secured())
    config = load(rendered, tmp_path / "pod", secrets)

    assert config.auth_enabled
    assert config.auth_htpasswd is not None
    assert set(config.auth_htpasswd.hashes) == set(USERS)
    assert config.auth_anonymous is True
    assert config.auth_token_ttl == 600
    assert config.auth_token_key_file is not None
    assert config.auth_token_key_file.secret == TOKEN_KEY.encode()
    assert config.access == tuple(
        AccessRule(tuple(r["repositories"]), tuple(r["users"])) for r in ACCESS_RULES
    )
    assert config.tls_cert_file is not None
    assert config.tls_cert_file.name == "tls.crt"
    assert config.tls_key_file is not None
    assert config.tls_key_file.name == "tls.key"
    assert config.tls_client_ca_file is not None
    assert config.tls_client_ca_file.read_text() == secrets["client-cas"]["ca.crt"]


PASSTHROUGH_UPSTREAM = {
    "name": "registry.example.com",
    "url": "https://registry.example.com",
    "credentials": "passthrough",
    "passthrough_ttl": 30,
}


def test_passthrough_upstreams_share_the_token_key_without_logins(
    chart: Chart, tmp_path: Path, secrets: dict[str, dict[str, str]]
) -> None:
    values = {
        **SHARED_BACKENDS,
        "replicaCount": 2,
        "config": {"upstreams": [PASSTHROUGH_UPSTREAM], "default_upstream": "registry.example.com"},
        "auth": {"tokenKey": {"existingSecret": "token-key"}},
    }
    rendered = chart.render(values)
    config = load(rendered, tmp_path / "pod", secrets)
    assert not config.auth_enabled
    assert config.logins_needed
    (upstream,) = config.upstreams
    assert upstream.passthrough
    assert upstream.passthrough_ttl == 30
    assert config.auth_token_key_file is not None
    assert config.auth_token_key_file.secret == TOKEN_KEY.encode()
    sources = volume(rendered, "auth")["projected"]["sources"]
    assert [source["secret"]["name"] for source in sources] == ["token-key"]


def test_secret_contents_never_reach_the_configmap(
    chart: Chart, secrets: dict[str, dict[str, str]]
) -> None:
    htpasswd = secrets["logins"]["users"]
    rendered = chart.render(secured())
    inline = chart.render(
        secured(auth={**secured()["auth"], "existingSecret": "", "htpasswd": htpasswd})
    )
    for text in (rendered.config_text, inline.config_text):
        assert "$2b$" not in text
        assert "BEGIN" not in text
    assert not any("$2b$" in json.dumps(d) for d in inline.docs if d["kind"] != "Secret")


def test_inline_htpasswd_becomes_a_chart_secret_whose_change_rolls_the_pods(
    chart: Chart, tmp_path: Path, secrets: dict[str, dict[str, str]]
) -> None:
    htpasswd = secrets["logins"]["users"]
    auth = {"enabled": True, "htpasswd": htpasswd}
    rendered = chart.render({"auth": auth})
    secret = rendered.one("Secret", f"{FULLNAME}-auth")
    assert base64.b64decode(secret["data"]["htpasswd"]).decode() == htpasswd
    assert volume(rendered, "auth")["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {
                "secret": {
                    "name": f"{FULLNAME}-auth",
                    "items": [{"key": "htpasswd", "path": "htpasswd"}],
                }
            }
        ],
    }
    config = load(rendered, tmp_path / "pod", secrets)
    assert config.auth_enabled
    assert config.auth_anonymous is False
    assert config.auth_token_ttl == 300
    # One replica signs with a key of its own, made at start.
    assert config.auth_token_key_file is None
    assert config.access is None

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        found: dict[str, str] = chart.render(values).statefulset["spec"]["template"]["metadata"][
            "annotations"
        ]
        return found

    before = annotations({"auth": auth})
    after = annotations({"auth": {**auth, "htpasswd": htpasswd + "# carol left\n"}})
    assert before["checksum/auth"] != after["checksum/auth"]
    assert before["checksum/config"] == after["checksum/config"]


def test_secrets_are_mounted_read_only_and_the_cache_stays_the_only_writable_path(
    chart: Chart,
) -> None:
    rendered = chart.render(secured())
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["auth"] == {
        "name": "auth",
        "mountPath": "/run/secrets/regcache-auth",
        "readOnly": True,
    }
    assert mounts["tls"] == {
        "name": "tls",
        "mountPath": "/run/secrets/regcache-tls",
        "readOnly": True,
    }
    writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    assert writable == ["/var/lib/regcache"]
    assert volume(rendered, "tls")["projected"]["sources"] == [
        {
            "secret": {
                "name": "regcache-tls",
                "items": [
                    {"key": "tls.crt", "path": "tls.crt"},
                    {"key": "tls.key", "path": "tls.key"},
                ],
            }
        },
        {"secret": {"name": "client-cas", "items": [{"key": "ca.crt", "path": "client-ca.crt"}]}},
    ]
    assert rendered.all("Secret") == []  # every file comes from the operator's Secrets


def test_a_missing_secret_key_fails_the_loader_as_it_would_in_the_pod(
    chart: Chart, tmp_path: Path, secrets: dict[str, dict[str, str]]
) -> None:
    # Guard: pod_files must not invent a file the cluster lacks.
    with pytest.raises(KeyError):
        load(chart.render(secured()), tmp_path, {**secrets, "token-key": {"key": TOKEN_KEY}})


# -- refusing what would not work -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"auth": {"enabeld": True}}, "enabeld"),
        ({"auth": {"tokenTtl": "soon"}}, "tokenTtl"),
        ({"auth": {"tokenKey": {"secret": "x"}}}, "secret"),
        ({"auth": {"existingSecret": "Bad_Name"}}, "existingSecret"),
        ({"access": [{"repositories": ["docker.io/**"], "user": ["*"]}]}, "user"),
        ({"access": [{"repositories": ["Docker.io/**"], "users": ["*"]}]}, "repositories"),
        ({"access": [{"repositories": ["docker.io/**"], "users": []}]}, "users"),
        ({"access": [{"repositories": ["docker.io/**"], "users": ["a b"]}]}, "users"),
        ({"tls": {"secret": "regcache-tls"}}, "secret"),
        ({"tls": {"clientCa": {"existingSecret": "cas", "keys": "ca.crt"}}}, "keys"),
        ({"serviceMonitor": {"tlsConfig": "insecure"}}, "tlsConfig"),
    ],
)
def test_schema_refuses_typos_and_bad_values(
    chart: Chart, values: dict[str, Any], complaint: str
) -> None:
    assert complaint in chart.render_error(values)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"auth": {"enabled": True}}, "auth.enabled: logins need an htpasswd file"),
        (
            {"auth": {"enabled": True, "htpasswd": "a:$2b$x", "existingSecret": "logins"}},
            "not both",
        ),
        (
            {
                **SHARED_BACKENDS,
                "replicaCount": 2,
                "auth": {"enabled": True, "existingSecret": "logins"},
            },
            "auth.tokenKey.existingSecret: with replicaCount 2",
        ),
        (
            {
                **SHARED_BACKENDS,
                "replicaCount": 3,
                "config": {"upstreams": [PASSTHROUGH_UPSTREAM]},
            },
            "with passthrough upstreams and replicaCount 3",
        ),
        ({"access": ACCESS_RULES}, "access: rules need logins"),
        ({"tls": {"clientCa": {"existingSecret": "cas"}}}, "mutual TLS needs TLS"),
    ],
)
def test_settings_regcache_would_refuse_fail_the_render(
    chart: Chart, values: dict[str, Any], complaint: str
) -> None:
    assert complaint in chart.render_error(values)
