"""The objects the Helm chart renders around regcache (``helm template``, read back with PyYAML):
the pod's probes and security context, the selectors that tie the objects together, and the
optional objects (Ingress, ServiceMonitor, NetworkPolicy, PodDisruptionBudget, dashboard).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.chart import FULLNAME, PRIVATE, Chart, Rendered, with_upstreams

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
