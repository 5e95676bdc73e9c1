"""What the Helm chart hands operators besides the manifests: NOTES.txt's runtime snippets, which
must parse and match the ones tests/runtimes proves, and the Grafana dashboard, whose queries must
name metrics regcache exports.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from proxy.config import Config
from proxy.metrics import Metrics
from tests.support.chart import CHART_DIR, FULLNAME, PRIVATE, Chart, with_upstreams

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
