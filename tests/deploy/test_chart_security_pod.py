"""The chart's TLS and logins seen from around the pod: probes, Services, Ingress, NetworkPolicy,
ServiceMonitor and NOTES.txt follow the https port, the secured manifests validate, and the
``helm test`` pod's script passes against a real regcache set up as the values say.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import CertificateAuthority, regcache_tls
from tests.support.chart import FULLNAME, KUBE_VERSIONS, Chart, kubernetes_validate, secured
from tests.support.clientauth import write_htpasswd
from tests.support.regcache import RegcacheProcess

# -- probes and the objects around the pod ------------------------------------------------------


def test_with_tls_probes_use_https_and_the_port_is_named_https(chart: Chart) -> None:
    tls_only = {"tls": {"existingSecret": "regcache-tls"}}
    rendered = chart.render(tls_only)
    container = rendered.container
    assert container["ports"] == [{"name": "https", "containerPort": 5000, "protocol": "TCP"}]
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
        "livenessProbe": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
        "readinessProbe": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
    }
    for service in rendered.all("Service"):
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["https"]


def test_with_tls_the_ingress_and_network_policy_name_the_https_port(chart: Chart) -> None:
    values = {
        "tls": {"existingSecret": "regcache-tls"},
        "ingress": {"enabled": True},
        "networkPolicy": {"enabled": True},
    }
    rendered = chart.render(values)
    [rule] = rendered.one("Ingress")["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "https"}
    [ingress] = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "https", "protocol": "TCP"}]
    # Clients reach the Ingress, whose own tls decides their scheme.
    notes = chart.notes(values)
    assert '"registry-mirrors": ["http://regcache.example.com"]' in notes


def test_with_mutual_tls_probes_only_connect(chart: Chart) -> None:
    # The kubelet has no client certificate: an HTTPS probe could never pass the handshake.
    container = chart.render(secured()).container
    for key in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[key]["tcpSocket"] == {"port": "https"}
        assert "httpGet" not in container[key]


def test_service_monitor_scrapes_https(chart: Chart) -> None:
    enabled = {"serviceMonitor": {"enabled": True}, "tls": {"existingSecret": "regcache-tls"}}
    [endpoint] = chart.render(enabled).one("ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("https", "https")
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    own = {"ca": {"secret": {"name": "ca", "key": "ca.crt"}}, "serverName": "regcache"}
    enabled["serviceMonitor"] = {"enabled": True, "tlsConfig": own}
    [endpoint] = chart.render(enabled).one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == own


def test_secured_manifests_validate_strictly(chart: Chart, tmp_path: Path) -> None:
    values = secured(
        networkPolicy={"enabled": True}, ingress={"enabled": True}, serviceMonitor={"enabled": True}
    )
    path = tmp_path / "secured.yaml"
    path.write_text(chart.template_text(values))
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate([path], kube_version)


def test_notes_say_https_and_logins(chart: Chart) -> None:
    notes = chart.notes(secured())
    address = f"{FULLNAME}.registry.svc.cluster.local:5000"
    assert f'"registry-mirrors": ["https://{address}"]' in notes
    assert "Secret regcache-tls" in notes
    assert "Secret client-cas" in notes
    assert f"docker login {address}" in notes
    assert "insecure" not in notes


# -- `helm test` against a real regcache --------------------------------------------------------


def helm_test_script(chart: Chart, values: dict[str, Any], address: str) -> list[str]:
    """The test pod's command, aimed at ``address`` instead of the Service."""
    pod = chart.render(values).one("Pod", f"{FULLNAME}-test-readyz")
    argv: list[str] = pod["spec"]["containers"][0]["command"]
    assert argv[:2] == ["python3", "-c"]
    return [sys.executable, "-c", argv[2].replace(f"{FULLNAME}:5000", address)]


@pytest.mark.parametrize("mode", ["plain", "tls-and-logins", "mutual-tls"])
def test_helm_test_passes_against_regcache_set_up_as_the_values_say(
    chart: Chart, tmp_path: Path, ca: CertificateAuthority, mode: str
) -> None:
    config: dict[str, Any] = {}
    values: dict[str, Any] = {}
    client: ssl.SSLContext | None = None
    if mode != "plain":
        mutual = mode == "mutual-tls"
        config["tls"], client = regcache_tls(ca, tmp_path, mutual=mutual)
        values["tls"] = {"existingSecret": "regcache-tls"}
        if mutual:
            values["tls"]["clientCa"] = {"existingSecret": "client-cas"}
    if mode == "tls-and-logins":
        config["auth"] = {"htpasswd": str(write_htpasswd(tmp_path))}
        values["auth"] = {"enabled": True, "existingSecret": "logins"}
    proxy = RegcacheProcess(config, work_dir=tmp_path / "regcache", client_ssl=client)
    proxy.start()
    try:
        argv = helm_test_script(chart, values, proxy.host)
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    finally:
        proxy.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    expected = {
        "plain": "/readyz 200\n/v2/ 200\n",
        "tls-and-logins": "/readyz 200\n/v2/ 401\n",
        "mutual-tls": "handshake: TLSv1.3\nrefused without a client certificate",
    }[mode]
    assert run.stdout.startswith(expected)


def test_helm_test_fails_when_mutual_tls_is_not_enforced(
    chart: Chart, tmp_path: Path, ca: CertificateAuthority
) -> None:
    # Guard on the test above: the script must notice a regcache that lets anyone in.
    tls, trusting = regcache_tls(ca, tmp_path)
    proxy = RegcacheProcess({"tls": tls}, work_dir=tmp_path / "regcache", client_ssl=trusting)
    proxy.start()
    try:
        values = secured(auth={"enabled": False}, access=[], replicaCount=1)
        run = subprocess.run(
            helm_test_script(chart, values, proxy.host),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        proxy.stop()
    assert run.returncode == 1
    assert "answered a client without a certificate" in run.stderr
