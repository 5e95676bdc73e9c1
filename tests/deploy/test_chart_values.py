"""The Helm chart's values and the config regcache reads from them, rendered with ``helm template``
and read back with PyYAML: upstreams, credentials, the pod roll on change, the cache volume, and
the values the schema refuses.

The strongest check here is that the ConfigMap's config.yaml, with the password files the pod
would have, loads with regcache's own loader (``proxy.config.load_config``): the chart renders a
configuration regcache accepts, with the values the operator gave.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import CliOverrides, Config, load_config
from tests.support.certs import CertificateAuthority
from tests.support.chart import (
    CHART_DIR,
    CI_VALUES,
    FULLNAME,
    PRIVATE,
    Chart,
    Rendered,
    pod_files,
    tls_secret,
    with_upstreams,
)

MiB = 2**20

# What the ci/ values files' existingSecret references would hold in the cluster.
EXISTING_SECRETS = {
    "acme-registry-robot": {"token": "robot-token-from-vault"},
    "regcache-token-key": {"token-key": "k" * 48},
    "regcache-tls": tls_secret(CertificateAuthority()),
    "regcache-s3": {"AWS_ACCESS_KEY_ID": "AKIDCI", "AWS_SECRET_ACCESS_KEY": "s3-secret-from-vault"},
    "regcache-redis": {"url": "redis://:redis-password@redis.storage.svc:6379/0"},
}


def load(
    rendered: Rendered, tmp_path: Path, secrets: dict[str, dict[str, str]] | None = None
) -> Config:
    """What regcache makes of the rendered config in the pod (no REGCACHE_* variables set)."""
    path = pod_files(rendered, tmp_path, secrets if secrets is not None else EXISTING_SECRETS)
    return load_config(path, {}, CliOverrides())


def values_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


# -- the config regcache reads ------------------------------------------------------------


@pytest.mark.parametrize(
    "values_path", [None, *CI_VALUES], ids=lambda p: p.stem if p else "default"
)
def test_rendered_config_loads_with_regcaches_loader(
    chart: Chart, tmp_path: Path, values_path: Path | None
) -> None:
    files = [values_path] if values_path else []
    config = load(chart.render(files=files), tmp_path)
    values = values_file(CHART_DIR / "values.yaml")["config"]
    if values_path:
        values = {**values, **values_file(values_path).get("config", {})}

    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 5000)
    assert config.cache_dir == Path("/var/lib/regcache")
    assert config.log_level == values["log_level"]
    assert config.log_format == values["log_format"]
    assert config.offline == values["offline"]
    if values["upstreams"]:
        assert [u.name for u in config.upstreams] == [u["name"] for u in values["upstreams"]]
        for got, want in zip(config.upstreams, values["upstreams"], strict=True):
            assert got.url == want["url"]
            assert got.aliases == tuple(want.get("aliases", ()))
            for key in ("tag_ttl", "tls_verify", "connect_timeout", "read_timeout"):
                if key in want:
                    assert getattr(got, key) == want[key], key
            assert got.serve_stale_on_not_found == want.get("serve_stale_on_not_found", False)
            assert got.username == want.get("username")
            if "password" in want:
                assert got.password == want["password"]
            if "existingSecret" in want:
                secret = EXISTING_SECRETS[want["existingSecret"]]
                assert got.password == secret[want.get("existingSecretKey", "password")]
    else:
        # No list in the values: regcache's built-in upstreams.
        assert config.upstreams == Config().upstreams


def test_every_upstream_setting_reaches_regcache(chart: Chart, tmp_path: Path) -> None:
    upstream = {
        **PRIVATE,
        "password": "0123",  # YAML 1.1 would read an unquoted 0123 as the number 83
        "tag_ttl": 86400,  # Go prints a float64 this big as 86400 only through toJson
        "tls_verify": False,
        "connect_timeout": 2.5,
        "read_timeout": 1000000,
        "serve_stale_on_not_found": True,
        "allow_private_redirects": True,
    }
    values = with_upstreams(
        upstream,
        {"name": "docker.io", "url": "https://registry-1.docker.io", "aliases": ["hub"]},
        default_upstream="hub",
        log_level="debug",
        log_format="json",
        event_loop="asyncio",
        offline=True,
        cache={"max_size": "10GiB", "max_age": "30d"},
    )
    config = load(chart.render(values), tmp_path)
    private = config.upstream("private")
    assert private is not None
    assert (private.name, private.url, private.aliases) == (
        "registry.example.com:5000",
        "https://registry.example.com:5000",
        ("private",),
    )
    assert (private.username, private.password) == ("robot", "0123")
    assert (private.tag_ttl, private.tls_verify) == (86400, False)
    assert (private.connect_timeout, private.read_timeout) == (2.5, 1000000)
    assert private.serve_stale_on_not_found is True
    assert private.allow_private_redirects is True
    assert config.default_upstream == "docker.io"  # the alias, resolved by regcache
    assert (config.log_level, config.log_format, config.event_loop) == ("debug", "json", "asyncio")
    assert config.offline is True
    assert config.cache_max_size == 10 * 2**30
    assert config.cache_max_age == 30 * 86400


# -- credentials --------------------------------------------------------------------------


def test_password_from_values_goes_to_a_secret_mounted_as_password_file(
    chart: Chart, tmp_path: Path
) -> None:
    rendered = chart.render(with_upstreams({**PRIVATE, "password": "s3cret"}))
    secret = rendered.one("Secret", f"{FULLNAME}-credentials")
    # ":" is not allowed in a Secret key.
    assert base64.b64decode(secret["data"]["registry.example.com_5000"]) == b"s3cret"
    assert "s3cret" not in rendered.config_text
    upstream = rendered.config["upstreams"][0]
    assert upstream["password_file"] == "/run/secrets/regcache/registry.example.com_5000"
    assert "password" not in upstream

    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == "credentials")
    assert mount == {"name": "credentials", "mountPath": "/run/secrets/regcache", "readOnly": True}
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "credentials")
    assert volume["projected"]["defaultMode"] == 0o440
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": f"{FULLNAME}-credentials",
                "items": [
                    {"key": "registry.example.com_5000", "path": "registry.example.com_5000"}
                ],
            }
        }
    ]
    assert not any("s3cret" in json.dumps(d) for d in rendered.docs if d["kind"] != "Secret")
    assert load(rendered, tmp_path).upstreams[0].password == "s3cret"


def test_existing_secret_is_projected_and_the_chart_makes_none(
    chart: Chart, tmp_path: Path
) -> None:
    values = with_upstreams(
        {**PRIVATE, "existingSecret": "robot-pull", "existingSecretKey": "token"},
        {
            "name": "docker.io",
            "url": "https://registry-1.docker.io",
            "username": "acme",
            "existingSecret": "hub-pull",
        },
    )
    rendered = chart.render(values)
    assert rendered.all("Secret") == []
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "credentials")
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "robot-pull",
                "items": [{"key": "token", "path": "registry.example.com_5000"}],
            }
        },
        {"secret": {"name": "hub-pull", "items": [{"key": "password", "path": "docker.io"}]}},
    ]
    secrets = {"robot-pull": {"token": "tok\n"}, "hub-pull": {"password": "hub-pass"}}
    config = load(rendered, tmp_path, secrets)
    # regcache strips the newline `kubectl create secret --from-file` often keeps.
    assert [u.password for u in config.upstreams] == ["tok", "hub-pass"]
    assert (
        "checksum/credentials"
        not in rendered.statefulset["spec"]["template"]["metadata"]["annotations"]
    )


def test_a_missing_secret_key_fails_regcaches_loader_as_it_would_in_the_pod(
    chart: Chart, tmp_path: Path
) -> None:
    # The guard on the check above: pod_files must not invent what the cluster lacks.
    rendered = chart.render(with_upstreams({**PRIVATE, "existingSecret": "robot-pull"}))
    with pytest.raises(KeyError):
        load(rendered, tmp_path, {"robot-pull": {"token": "x"}})


def test_own_password_file_is_passed_through(chart: Chart) -> None:
    values = with_upstreams({**PRIVATE, "password_file": "/vault/secrets/registry"})
    rendered = chart.render(values)
    assert rendered.config["upstreams"][0]["password_file"] == "/vault/secrets/registry"
    assert "credentials" not in [v["name"] for v in rendered.pod_spec["volumes"]]


# -- rolling the pods -----------------------------------------------------------------------


def pod_annotations(rendered: Rendered) -> dict[str, str]:
    found: dict[str, str] = rendered.statefulset["spec"]["template"]["metadata"]["annotations"]
    return found


def test_config_and_password_changes_change_the_pod_template(chart: Chart) -> None:
    base = pod_annotations(chart.render(with_upstreams({**PRIVATE, "password": "one"})))
    other_password = pod_annotations(chart.render(with_upstreams({**PRIVATE, "password": "two"})))
    other_config = pod_annotations(
        chart.render(with_upstreams({**PRIVATE, "password": "one"}, log_level="debug"))
    )
    unrelated = pod_annotations(
        chart.render(
            with_upstreams({**PRIVATE, "password": "one"}), {"service": {"type": "NodePort"}}
        )
    )
    assert other_password["checksum/credentials"] != base["checksum/credentials"]
    assert other_password["checksum/config"] == base["checksum/config"]
    assert other_config["checksum/config"] != base["checksum/config"]
    assert unrelated == base


# -- the cache volume -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "percent", "max_size_mib"),
    [
        ("50Gi", 90, 46080),
        ("1Ti", 80, 838860),  # 838860.8 MiB, rounded down
        ("500G", 90, 429153),  # decimal units: 450e9 bytes
        ("1.5Ti", 95, 1494220),
    ],
)
def test_pvc_size_and_the_eviction_bound_follow_the_values(
    chart: Chart, tmp_path: Path, size: str, percent: int, max_size_mib: int
) -> None:
    rendered = chart.render({"persistence": {"size": size, "maxSizePercent": percent}})
    [claim] = rendered.statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "cache"
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert rendered.config["cache"]["max_size"] == f"{max_size_mib}MiB"
    assert load(rendered, tmp_path).cache_max_size == max_size_mib * MiB


def test_explicit_max_size_wins_and_zero_percent_means_no_bound(chart: Chart) -> None:
    explicit = chart.render({"config": {"cache": {"max_size": "7GiB", "max_age": "12h"}}})
    assert explicit.config["cache"] == {"max_size": "7GiB", "max_age": "12h"}
    unbounded = chart.render({"persistence": {"maxSizePercent": 0}})
    assert "cache" not in unbounded.config


def test_storage_class_and_retention_policy(chart: Chart) -> None:
    values = {
        "persistence": {
            "storageClassName": "fast-ssd",
            "retentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        }
    }
    sts = chart.render(values).statefulset
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


def test_without_persistence_the_cache_is_a_bounded_empty_dir(chart: Chart) -> None:
    rendered = chart.render({"persistence": {"enabled": False, "emptyDirSizeLimit": "10Gi"}})
    assert "volumeClaimTemplates" not in rendered.statefulset["spec"]
    cache = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "cache")
    assert cache == {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}}
    assert rendered.config["cache"]["max_size"] == "9216MiB"


# -- refusing bad values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"config": {"log_levl": "debug"}}, "log_levl"),
        ({"persistence": {"sise": "10Gi"}}, "sise"),
        ({"servicemonitor": {"enabled": True}}, "servicemonitor"),
        ({"config": {"log_level": "verbose"}}, "log_level"),
        ({"config": {"cache": {"max_size": "lots"}}}, "max_size"),
        ({"persistence": {"size": "50GB"}}, "size"),
        (with_upstreams({"name": "x.io", "url": "https://x.io", "tagttl": 5}), "tagttl"),
        (with_upstreams({"name": "X.io", "url": "https://x.io"}), "name"),
        (with_upstreams({"name": "x.io", "url": "https://x.io/v2"}), "url"),
        (with_upstreams({"name": "x.io", "url": "https://x.io", "tag_ttl": "300"}), "tag_ttl"),
        (with_upstreams({"name": "x.io", "url": "https://x.io", "username": "u"}), "password"),
        (with_upstreams({"name": "x.io", "url": "https://x.io", "password": "p"}), "username"),
        (
            with_upstreams(
                {
                    "name": "x.io",
                    "url": "https://x.io",
                    "username": "u",
                    "password": "p",
                    "existingSecret": "s",
                }
            ),
            "oneOf",
        ),
        ({"image": {"digest": "latest"}}, "digest"),
    ],
)
def test_schema_refuses_typos_and_bad_values(
    chart: Chart, values: dict[str, Any], complaint: str
) -> None:
    assert complaint in chart.render_error(values)


def test_default_upstream_must_name_an_upstream(chart: Chart) -> None:
    values = with_upstreams(
        {"name": "ghcr.io", "url": "https://ghcr.io"}, default_upstream="docker.io"
    )
    error = chart.render_error(values)
    assert "config.default_upstream" in error
    assert '"docker.io"' in error  # what was asked for
    assert "ghcr.io" in error  # and what there is


def test_upstream_names_and_aliases_must_be_unique(chart: Chart) -> None:
    values = with_upstreams(
        {"name": "docker.io", "url": "https://registry-1.docker.io", "aliases": ["hub"]},
        {"name": "hub", "url": "https://hub.example"},
    )
    assert "must be unique" in chart.render_error(values)
