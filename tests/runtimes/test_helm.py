"""A Helm chart stored as an OCI artifact pulls through regcache byte for byte.

A chart's manifest is an OCI image manifest whose config and layer are Helm's own media types
(``application/vnd.cncf.helm.config.v1+json``, ``...chart.content.v1.tar+gzip``): no image
config, no tar layers. regcache must pass it through as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helm import Helm
from tests.support.images import OCI_MANIFEST
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import access_mark, regcache_requests, registry_digest, v2_requests
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def test_chart_pulls_byte_identical_and_then_from_cache(
    helm: Helm, runtime_cache: RegcacheProcess, upstream: Upstream, tmp_path: Path
) -> None:
    chart = helm.create_chart("regcache-demo", "0.1.0")
    pushed = helm.push(chart, f"oci://{upstream.host}/charts")
    assert pushed == registry_digest(upstream.url, "charts/regcache-demo", "0.1.0")
    manifest_response = runtime_cache.get(
        "/v2/charts/regcache-demo/manifests/0.1.0", {"Accept": OCI_MANIFEST}
    )
    manifest = json.loads(manifest_response.body)
    assert manifest_response.headers["Content-Type"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == HELM_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART]
    blobs = [manifest["config"]["digest"], manifest["layers"][0]["digest"]]

    mark, upstream_mark = access_mark(runtime_cache), upstream.registry.mark()
    cold, cold_digest = helm.pull(
        f"oci://{runtime_cache.host}/charts/regcache-demo", "0.1.0", tmp_path / "cold"
    )
    seen = regcache_requests(runtime_cache, mark, agent="Helm/")
    print("helm, charts/regcache-demo:0.1.0:", *v2_requests(seen), sep="\n  ")

    assert cold.read_bytes() == chart.read_bytes()
    assert cold_digest == pushed
    assert all(e.status == 200 for e in seen)
    for digest in blobs:
        assert upstream.registry.blob_gets(digest, since=upstream_mark) == 1

    upstream_mark = upstream.registry.mark()
    warm, warm_digest = helm.pull(
        f"oci://{runtime_cache.host}/charts/regcache-demo", "0.1.0", tmp_path / "warm"
    )
    assert warm.read_bytes() == chart.read_bytes()
    assert warm_digest == pushed
    assert upstream.registry.blob_gets(since=upstream_mark) == 0
