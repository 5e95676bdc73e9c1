"""What CI runs on the chart besides the manifest assertions: ``helm lint --strict`` and
``kubernetes-validate --strict`` on ``helm template`` output, for the default values and for each
realistic values file in charts/regcache/ci/.

kubernetes-validate works offline from the API schemas it bundles. It has none for CRDs, so the
ServiceMonitor (monitoring.coreos.com/v1) only gets a warning from it; test_chart_objects.py
checks that object's fields by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART_DIR, CI_VALUES, KUBE_VERSIONS, Chart, kubernetes_validate

CASES = [None, *CI_VALUES]


def case_id(path: Path | None) -> str:
    return path.stem if path else "default"


@pytest.mark.parametrize("values_path", CASES, ids=case_id)
def test_helm_lint_strict(chart: Chart, values_path: Path | None) -> None:
    output = chart.lint([values_path] if values_path else [])
    assert "0 chart(s) failed" in output


@pytest.fixture(scope="module")
def rendered_files(chart: Chart, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("rendered")
    paths = []
    for values_path in CASES:
        path = out / f"{case_id(values_path)}.yaml"
        path.write_text(chart.template_text(files=[values_path] if values_path else []))
        paths.append(path)
    return paths


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS, ids=lambda v: v or "newest")
def test_manifests_validate_strictly(rendered_files: list[Path], kube_version: str | None) -> None:
    output = kubernetes_validate(rendered_files, kube_version)
    # The only kind without a schema must be the CRD; anything else would go unchecked.
    unchecked = [line for line in output.splitlines() if "Couldn't find schema" in line]
    assert all("kind ServiceMonitor" in line for line in unchecked), unchecked


def test_validator_rejects_unknown_fields(chart: Chart, tmp_path: Path) -> None:
    # The check above is only worth something if a misplaced field fails it.
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(chart.template_text()) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(AssertionError, match="httpGett"):
        kubernetes_validate([path], KUBE_VERSIONS[0])


def test_ci_values_exercise_every_optional_feature() -> None:
    # The values files are the realistic installs CI renders: together they must turn on each
    # optional object and credential path, or a broken template could pass unnoticed.
    merged = "\n".join(path.read_text() for path in CI_VALUES)
    values = [yaml.safe_load(path.read_text()) for path in CI_VALUES]
    for section in ("ingress", "serviceMonitor", "networkPolicy", "grafanaDashboard"):
        assert any(v.get(section, {}).get("enabled") for v in values), section
    fragments = ("existingSecret:", "password:", "offline: true", "max_size:", "max_age:")
    for fragment in (*fragments, "htpasswd:", "tokenKey:", "access:", "tls:"):
        assert fragment in merged, fragment
    assert {p.name for p in CI_VALUES} >= {
        "private-registry-values.yaml",
        "ingress-monitoring-values.yaml",
        "offline-values.yaml",
        "big-cache-values.yaml",
        "logins-tls-values.yaml",
        "shared-autoscaling-values.yaml",
    }
    # Both ways of scaling out the shared backends' Deployment, and of reaching them.
    assert any(v.get("autoscaling", {}).get("enabled") for v in values)
    assert any(v.get("replicaCount", 1) > 1 and "autoscaling" not in v for v in values)
    for fragment in ("backend: s3", "backend: redis", "url: rediss://"):
        assert fragment in merged, fragment
    assert (CHART_DIR / ".helmignore").read_text().count("ci/") == 1
