"""What operators see: structured access logs and metrics that agree with what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream


def access_records(proxy: RegcacheProcess) -> list[dict[str, Any]]:
    records = []
    for line in proxy.log_text().splitlines():
        entry = json.loads(line)  # every line is JSON in this mode, startup lines included
        if entry["logger"] == "regcache.access":
            records.append(entry)
    return records


def test_json_access_log_has_one_record_per_request(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = regcache_factory(
        {"upstreams": [upstream.entry("docker.io")]}, extra_args=["--log-format", "json"]
    )
    image = upstream.images.small
    skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "cold")
    skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "warm")
    blobs = [r for r in access_records(proxy) if r.get("kind") == "blob"]
    layer = image.layer_digests[2]
    for_layer = [r for r in blobs if r["reference"] == layer]
    assert [r["cache"] for r in for_layer] == ["miss", "hit"]
    for record in for_layer:
        assert record["upstream"] == "docker.io"
        assert record["repository"] == "library/small"
        assert record["status"] == 200
        assert record["bytes"] == image.layer_sizes[2]
        assert record["duration_ms"] >= 0
        assert record["client"] == "127.0.0.1"
        assert record["user_agent"].startswith("skopeo")
    manifests = [r for r in access_records(proxy) if r.get("kind") == "manifest"]
    assert [r["cache"] for r in manifests] == ["miss", "hit"]
