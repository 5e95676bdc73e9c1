"""The integration harness's RegcacheProcess, against a stand-in for ``python -m proxy`` and
against the real proxy, and its metric and port helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.ports import free_port
from tests.support.regcache import RegcacheError, parse_metrics, sum_samples
from tests.support.upstreams import RegcacheFactory, Upstream

# -- RegcacheProcess, against a stand-in for `python -m proxy` ------------------------------

FAKE_PROXY = '''
import argparse, http.server, pathlib, sys

parser = argparse.ArgumentParser()
parser.add_argument("command")
parser.add_argument("--config")
parser.add_argument("--listen")
parser.add_argument("--cache-dir")
args = parser.parse_args()
if "fail" in pathlib.Path(args.config).read_text():
    print("bad config: fail", file=sys.stderr)
    sys.exit(3)
cache = pathlib.Path(args.cache_dir)
starts = cache / "starts"
starts.write_text(str(int(starts.read_text()) + 1 if starts.exists() else 1))
METRICS = """# HELP regcache_requests_total Requests.
# TYPE regcache_requests_total counter
regcache_requests_total{kind="blob",result="hit"} 3.0
regcache_requests_total{kind="blob",result="miss"} 2.0
regcache_requests_total{kind="manifest",result="hit"} 1.0
# HELP regcache_cache_bytes Bytes cached.
# TYPE regcache_cache_bytes gauge
regcache_cache_bytes 1234.0
"""

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/healthz": b"ok", "/metrics": METRICS.encode(),
                "/config": pathlib.Path(args.config).read_bytes()}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

host, port = args.listen.rsplit(":", 1)
print("serving on", args.listen, flush=True)
http.server.HTTPServer((host, int(port)), Handler).serve_forever()
'''


def test_regcache_process_wrapper(regcache_factory: RegcacheFactory, tmp_path: Path) -> None:
    script = tmp_path / "fake_proxy.py"
    script.write_text(FAKE_PROXY)
    config = {
        "default_upstream": "docker.io",
        "upstreams": [{"name": "docker.io", "url": "http://127.0.0.1:5001", "tag_ttl": 300}],
    }
    proc = regcache_factory(config, command=[sys.executable, str(script)])
    assert proc.host == f"127.0.0.1:{proc.port}"
    assert proc.url == f"http://{proc.host}"
    assert "serving on" in proc.log_text()
    assert json.loads(json.dumps(config)) == _yaml_load(proc.get("/config").body)

    assert proc.metric("regcache_requests", kind="blob") == 5
    assert proc.metric("regcache_requests_total", result="hit") == 4
    assert proc.metric("regcache_cache_bytes") == 1234
    assert proc.metric("regcache_nothing_here") == 0

    proc.kill()
    assert not proc.running
    proc.start()
    assert proc.stop() is not None
    proc.start()  # same port and cache dir after a crash and after a clean stop
    assert (proc.cache_dir / "starts").read_text() == "3"


def test_regcache_process_reports_a_failed_start(tmp_path: Path) -> None:
    from tests.support.regcache import RegcacheProcess

    script = tmp_path / "fake_proxy.py"
    script.write_text(FAKE_PROXY)
    proc = RegcacheProcess(
        {"mode": "fail"}, work_dir=tmp_path / "w", command=[sys.executable, str(script)]
    )
    with pytest.raises(RegcacheError, match=r"(?s)exited with 3.*bad config: fail"):
        proc.start()
    assert not proc.running


def test_regcache_process_runs_the_real_proxy(
    regcache_factory: RegcacheFactory, upstream: Upstream, tmp_path: Path
) -> None:
    proc = regcache_factory({"default_upstream": "docker.io", "upstreams": [upstream.entry()]})
    small = upstream.images.small
    assert skopeo.pull(proc.ref("library/small", "1.0"), tmp_path / "a").manifest == small.manifest
    assert proc.metrics()  # /metrics parses as Prometheus text
    proc.restart()
    assert skopeo.inspect_raw(proc.ref("library/small", "1.0")) == small.manifest


def test_metric_helpers_sum_matching_samples() -> None:
    samples = parse_metrics(
        "# TYPE x_total counter\n"
        'x_total{a="1",b="2"} 1\nx_total{a="1",b="3"} 2\nx_total{a="2",b="3"} 4\n'
    )
    assert sum_samples(samples, "x", {"a": "1"}) == 3
    assert sum_samples(samples, "x_total", {"b": "3"}) == 6
    assert sum_samples(samples, "x", {"a": "9"}) == 0


def test_free_port_hands_out_distinct_ports() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20


def _yaml_load(data: bytes) -> object:
    import yaml

    return yaml.safe_load(data)
