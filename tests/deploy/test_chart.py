"""The Helm chart, rendered with ``helm template`` and read back with PyYAML.

The strongest check here is that the ConfigMap's config.yaml, with the password files the pod
would have, loads with regcache's own loader (``proxy.config.load_config``): the chart renders a
configuration regcache accepts, with the values the operator gave.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import CliOverrides, Config, load_config
from proxy.metrics import Metrics
from tests.support.certs import CertificateAuthority
from tests.support.chart import (
    CHART_DIR,
    CI_VALUES,
    RELEASE,
    Chart,
    Rendered,
    pod_files,
    tls_secret,
)

FULLNAME = f"{RELEASE}-regcache"
MiB = 2**20

# What the ci/ values files' existingSecret references would hold in the cluster.
EXISTING_SECRETS = {
    "acme-registry-robot": {"token": "robot-token-from-vault"},
    "regcache-token-key": {"token-key": "k" * 48},
    "regcache-tls": tls_secret(CertificateAuthority()),
    "regcache-s3": {"AWS_ACCESS_KEY_ID": "AKIDCI", "AWS_SECRET_ACCESS_KEY": "s3-secret-from-vault"},
    "regcache-redis": {"url": "redis://:redis-password@redis.storage.svc:6379/0"},
}

PRIVATE = {
    "name": "registry.example.com:5000",
    "url": "https://registry.example.com:5000",
    "aliases": ["private"],
    "username": "robot",
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


def with_upstreams(*upstreams: dict[str, Any], **config: Any) -> dict[str, Any]:
    """``config`` values listing ``upstreams``; the first is the default unless one is given."""
    config.setdefault("default_upstream", upstreams[0]["name"])
    return {"config": {"upstreams": list(upstreams), **config}}


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


# -- the pod --------------------------------------------------------------------------------


def test_probes_hit_health_endpoints_on_the_listening_port(chart: Chart) -> None:
    rendered = chart.render()
    container = rendered.container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 5000}
    assert rendered.config["listen"] == "0.0.0.0:5000"
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "http"},
        "livenessProbe": {"path": "/healthz", "port": "http"},
        "readinessProbe": {"path": "/readyz", "port": "http"},
    }
    assert container["args"] == ["serve", "--config", "/etc/regcache/config.yaml"]


def test_probe_timing_comes_from_values(chart: Chart) -> None:
    container = chart.render({"startupProbe": {"failureThreshold": 200}}).container
    assert container["startupProbe"]["failureThreshold"] == 200
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_security_context_is_restricted_and_the_cache_is_the_only_writable_path(
    chart: Chart,
) -> None:
    rendered = chart.render(with_upstreams({**PRIVATE, "password": "x"}))
    pod, container = rendered.pod_spec, rendered.container
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert key not in pod
    assert not any("hostPath" in v for v in pod["volumes"])

    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/var/lib/regcache"] == [rendered.config["cache_dir"]]


def test_helm_test_pod_is_restricted_and_not_selected_by_the_services(chart: Chart) -> None:
    rendered = chart.render()
    pod = rendered.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["securityContext"] == rendered.container["securityContext"]
    assert pod["spec"]["securityContext"] == rendered.pod_spec["securityContext"]
    assert "/readyz" in container["command"][-1]
    labels = pod["metadata"]["labels"]
    selectors = [s["spec"]["selector"] for s in rendered.all("Service")]
    selectors += [rendered.statefulset["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert not selector.items() <= labels.items()


def test_selectors_tie_the_objects_together(chart: Chart) -> None:
    rendered = chart.render()
    sts = rendered.statefulset
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for service in rendered.all("Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    headless = rendered.one("Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-headless"
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    config_volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == FULLNAME


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


# -- optional objects -------------------------------------------------------------------------

TOGGLES = {
    "ingress": ({"ingress": {"enabled": True}}, "Ingress"),
    "serviceMonitor": ({"serviceMonitor": {"enabled": True}}, "ServiceMonitor"),
    "podDisruptionBudget": ({"podDisruptionBudget": {"enabled": True}}, "PodDisruptionBudget"),
    "networkPolicy": ({"networkPolicy": {"enabled": True}}, "NetworkPolicy"),
}


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
@pytest.mark.parametrize("enabled", [True, False])
def test_toggles_add_and_remove_objects(chart: Chart, toggle: str, enabled: bool) -> None:
    values, kind = TOGGLES[toggle]
    section = {**next(iter(values.values())), "enabled": enabled}
    rendered = chart.render({toggle: section})
    assert (kind in rendered.kinds()) is enabled


def test_default_objects(chart: Chart) -> None:
    rendered = chart.render()
    assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in rendered.docs) == sorted(
        [
            f"ConfigMap/{FULLNAME}",
            f"Service/{FULLNAME}",
            f"Service/{FULLNAME}-headless",
            f"StatefulSet/{FULLNAME}",
            f"ServiceAccount/{FULLNAME}",
            f"PodDisruptionBudget/{FULLNAME}",
            f"Pod/{FULLNAME}-test-readyz",
        ]
    )


def test_dashboard_toggle(chart: Chart) -> None:
    def dashboards(rendered: Rendered) -> list[dict[str, Any]]:
        return [
            d for d in rendered.all("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
        ]

    assert dashboards(chart.render()) == []
    [cm] = dashboards(chart.render({"grafanaDashboard": {"enabled": True}}))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["regcache.json"])["uid"] == "regcache"


def test_service_monitor_scrapes_metrics_through_the_main_service_only(chart: Chart) -> None:
    values = {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
    rendered = chart.render(values)
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["registry"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in rendered.all("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    # Through the headless Service too, every pod would be scraped twice.
    assert selected == [FULLNAME]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in [
        p["name"] for p in rendered.one("Service", FULLNAME)["spec"]["ports"]
    ]


def test_ingress_routes_everything_to_the_service(chart: Chart) -> None:
    values = {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "cache.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "cache-tls", "hosts": ["cache.example"]}],
        }
    }
    ingress = chart.render(values).one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "cache.example"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/"
    assert path["backend"] == {"service": {"name": FULLNAME, "port": {"name": "http"}}}
    assert ingress["spec"]["tls"] == [{"secretName": "cache-tls", "hosts": ["cache.example"]}]


def test_network_policy_opens_dns_and_the_upstreams_ports(chart: Chart) -> None:
    values = {
        "networkPolicy": {"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        **with_upstreams(
            {"name": "docker.io", "url": "https://registry-1.docker.io"},
            {"name": "mirror.local", "url": "http://mirror.local"},
            {"name": "harbor.local:8443", "url": "https://harbor.local:8443"},
        ),
    }
    policy = chart.render(values).one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"][0] == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    # `helm test`'s pod may still reach the Service.
    assert rule["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    dns, upstreams = policy["spec"]["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert sorted(p["port"] for p in upstreams["ports"]) == [80, 443, 8443]


def test_network_policy_without_egress_rules_leaves_egress_open(chart: Chart) -> None:
    values = {"networkPolicy": {"enabled": True, "egress": {"enabled": False}}}
    policy = chart.render(values).one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]
    assert "from" not in policy["spec"]["ingress"][0]  # empty ingressFrom: anyone may pull


def test_pdb_min_available_wins_over_max_unavailable(chart: Chart) -> None:
    assert chart.render().one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = chart.render({"podDisruptionBudget": {"minAvailable": "50%"}}).one(
        "PodDisruptionBudget"
    )["spec"]
    assert spec["minAvailable"] == "50%"
    assert "maxUnavailable" not in spec


def test_image_reference(chart: Chart) -> None:
    assert chart.render().container["image"] == "regcache:0.1.0"
    tagged = chart.render({"image": {"repository": "reg.example/regcache", "tag": "1.2.3"}})
    assert tagged.container["image"] == "reg.example/regcache:1.2.3"
    digest = "sha256:" + "ab" * 32
    pinned = chart.render({"image": {"repository": "reg.example/regcache", "digest": digest}})
    assert pinned.container["image"] == f"reg.example/regcache@{digest}"


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


# -- NOTES.txt -------------------------------------------------------------------------------


def snippets(notes: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """The daemon.json, the hosts.toml files (by registry) and registries.conf the notes show,
    parsed: a snippet a runtime cannot read is a broken promise."""
    daemon = json.loads(re.search(r"^  \{\n.*?^  \}$", notes, re.S | re.M)[0])  # type: ignore[index]
    hosts = {}
    for m in re.finditer(
        r"# /etc/containerd/certs.d/(\S+)/hosts.toml\n(.*?)\n\n(.*?)(?=\n\n|\Z)", notes, re.S
    ):
        hosts[m[1]] = tomllib.loads(f"{m[2]}\n{m[3]}")
    conf_text = notes.split("registries.conf", 1)[1].split("\n", 2)[2].rsplit("\n\n", 1)[0]
    registries = tomllib.loads(conf_text)
    return daemon, hosts, registries


def test_notes_show_runtime_settings_for_every_upstream(chart: Chart) -> None:
    notes = chart.notes()
    address = f"{FULLNAME}.registry.svc.cluster.local:5000"
    daemon, hosts, registries = snippets(notes)
    assert daemon == {"registry-mirrors": [f"http://{address}"]}
    names = [u.name for u in Config().upstreams]
    assert list(hosts) == names
    assert hosts["docker.io"] == {
        "server": "https://registry-1.docker.io",
        "host": {f"http://{address}": {"capabilities": ["pull", "resolve"]}},
    }
    assert [r["prefix"] for r in registries["registry"]] == names
    assert registries["registry"][1]["mirror"] == [
        {"location": f"{address}/ghcr.io", "insecure": True}
    ]
    assert "port-forward" in notes


def test_notes_snippets_are_the_ones_the_runtimes_tests_prove(chart: Chart) -> None:
    # tests/runtimes configures real containerd, dockerd and podman with these templates and
    # pulls through regcache; the notes must hand operators the same text.
    from tests.support import containerd, dockerd, podman
    from tests.support.runtimes import render

    notes = chart.notes({"service": {"type": "LoadBalancer"}})
    address = "$LB_ADDRESS:5000"
    unindented = "\n".join(line.removeprefix("  ") for line in notes.splitlines())
    assert render(dockerd.DAEMON_JSON, regcache=address) in unindented
    for registry in ("docker.io", "ghcr.io"):
        assert containerd.hosts_toml(registry, address) in unindented
    assert podman.registries_conf(address, ["docker.io", "ghcr.io"]) in unindented


def test_notes_with_a_tls_ingress_use_https_and_no_insecure_setting(chart: Chart) -> None:
    files = [CHART_DIR / "ci" / "ingress-monitoring-values.yaml"]
    notes = chart.notes(files=files)
    daemon, hosts, registries = snippets(notes)
    assert daemon == {"registry-mirrors": ["https://regcache.acme.example"]}
    assert all(list(h["host"]) == ["https://regcache.acme.example"] for h in hosts.values())
    assert all("insecure" not in r["mirror"][0] for r in registries["registry"])


def test_notes_mirror_path_avoids_ports_and_says_offline(chart: Chart) -> None:
    notes = chart.notes(
        with_upstreams(
            {**PRIVATE, "password": "x"},
            {"name": "solo.example:5000", "url": "https://solo.example:5000"},
            default_upstream="private",
            offline=True,
        ),
        {"service": {"type": "NodePort"}},
    )
    assert "OFFLINE" in notes
    _, hosts, registries = snippets(notes)
    assert hosts["registry.example.com:5000"]["server"] == "https://registry.example.com:5000"
    private, solo = registries["registry"]
    assert private["mirror"] == [{"location": "$NODE_IP:$NODE_PORT/private", "insecure": True}]
    assert "mirror" not in solo  # no port-free name to put in a path
    assert "export NODE_PORT=" in notes


# -- the Grafana dashboard --------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART_DIR / "dashboards" / "regcache.json").read_text())
    return loaded


def exprs(board: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"] if p["type"] != "row"
    }


def test_dashboard_has_the_panels_operators_ask_for() -> None:
    panels = exprs(dashboard())
    wanted = {
        "Hit ratio": ["regcache_cache_requests_total"],
        "Bytes served: cache vs upstream": ["regcache_served_bytes_total", "source"],
        "Upstream latency": ["regcache_upstream_request_duration_seconds_bucket", "0.99"],
        "Upstream errors": ["regcache_upstream_requests_total", 'status=~"5..|error"'],
        "In-flight downloads": ["regcache_inflight_downloads"],
        "Dedupe joins": ["regcache_dedup_joins_total"],
        "Cache size": ["regcache_cache_size_bytes"],
        "Evictions": ["regcache_evictions_total"],
        "Stale serves": ["regcache_stale_served_total"],
        "Rate limit remaining": ["regcache_upstream_ratelimit_remaining"],
    }
    for title, fragments in wanted.items():
        text = " ".join(panels[title])
        for fragment in fragments:
            assert fragment in text, (title, fragment)


def test_dashboard_queries_only_metrics_regcache_exports() -> None:
    # The series names regcache's own registry exposes: a typo in a query would otherwise show
    # an empty panel, not an error. Labelled metrics have no samples before their first use, so
    # the names come from each family's name and type.
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }
    board = dashboard()
    queries = [e for es in exprs(board).values() for e in es]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    used = {name for q in queries for name in re.findall(r"\bregcache_[a-z_]+", q)}
    assert used
    assert used <= exported, used - exported


def test_dashboard_is_importable() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            # Every panel follows the data source picked at import.
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"]
