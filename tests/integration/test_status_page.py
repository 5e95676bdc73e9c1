"""The status page in a real browser: it renders, and its numbers agree with /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import RegcacheFactory
from tests.support import chromium, skopeo
from tests.support.httpclient import http_get
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until


def data_value(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*data-value="([^"]*)"', dom)
    assert match, f"#{element_id} not rendered"
    return match.group(1)


def test_status_page_shows_what_the_metrics_say(
    upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    proxy = regcache_factory({"upstreams": [upstream.entry("docker.io")]})
    for attempt in ("cold", "warm", "warmer"):
        skopeo.pull(proxy.ref("small", "1.0"), tmp_path / attempt)

    def history_points() -> int:
        return len(http_get(proxy.url + "/status.json").json()["history"])

    wait_until(lambda: history_points() >= 2, "two samples for the chart")

    dom = chromium.dump_dom(proxy.url + "/")
    picture = chromium.screenshot(proxy.url + "/", tmp_path / "status.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000
    assert 'data-loaded="true"' in dom

    hits = sum(
        proxy.metric("regcache_cache_requests_total", result=result)
        for result in ("hit", "revalidated", "stale")
    )
    misses = proxy.metric("regcache_cache_requests_total", result="miss")
    assert float(data_value(dom, "hit-ratio")) == hits / (hits + misses)
    assert float(data_value(dom, "bytes-from-cache")) == proxy.metric(
        "regcache_served_bytes_total", source="cache"
    )
    assert float(data_value(dom, "bytes-from-upstream")) == proxy.metric(
        "regcache_served_bytes_total", source="upstream"
    )
    assert float(data_value(dom, "cache-size")) == proxy.metric("regcache_cache_size_bytes")
    assert data_value(dom, "inflight-count") == "0"
    assert "library/small" in dom  # top images
    assert "ok (200)" in dom  # upstream health
    points = re.search(r'id="chart"[^>]*data-points="(\d+)"', dom)
    assert points
    assert int(points.group(1)) >= 2

    status = json.loads(http_get(proxy.url + "/status.json").body)
    assert status["top_images"][0] == {
        "upstream": "docker.io",
        "repository": "library/small",
        "pulls": 3,
    }
