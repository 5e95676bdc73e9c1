"""The proxy under test (``python -m proxy serve``) as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .httpclient import HttpResponse, http_request
from .process import ServerProcess, ServerProcessError

REPO_ROOT = Path(__file__).resolve().parents[2]

MetricKey = tuple[str, frozenset[tuple[str, str]]]

# Families /metrics must show once one image has been pulled through regcache, whichever way
# regcache runs (in-process in tests/fast, as a process in tests/integration).
CORE_METRICS = (
    "regcache_cache_requests_total",
    "regcache_served_bytes_total",
    "regcache_upstream_requests_total",
    "regcache_upstream_request_duration_seconds_bucket",
    "regcache_cache_size_bytes",
    "regcache_inflight_downloads",
)


class RegcacheError(ServerProcessError):
    pass


def upstream_entry(
    name: str,
    url: str,
    *,
    aliases: Sequence[str] = (),
    creds: tuple[str, str] | None = None,
    tag_ttl: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One item of the config's ``upstreams`` list."""
    entry: dict[str, Any] = {"name": name, "url": url}
    if aliases:
        entry["aliases"] = list(aliases)
    if creds is not None:
        entry["username"], entry["password"] = creds
    if tag_ttl is not None:
        entry["tag_ttl"] = tag_ttl
    entry.update(extra)
    return entry


class RegcacheProcess(ServerProcess):
    """Runs the proxy with a YAML config written from ``config``; restartable on the same port
    and cache dir, so tests can check what survives a restart or a crash (:meth:`kill`)."""

    label = "regcache"
    error_type = RegcacheError

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        work_dir: Path | None = None,
        cache_dir: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 20.0,
        command: Sequence[str] | None = None,
        client_ssl: ssl.SSLContext | None = None,
        default_workers: bool = False,
    ) -> None:
        """``command`` replaces ``python -m proxy`` (the harness's own tests use a stand-in).

        ``default_workers``: without ``workers`` in the config, run the server's own default
        (one worker per CPU) rather than the tests' one process; the benchmarks measure that.

        ``client_ssl``: the proxy serves HTTPS (its config has ``tls:``), and the driver's own
        requests trust this context and show its client certificate, if any.
        """
        self.client_ssl = client_ssl
        self.default_workers = default_workers
        super().__init__(
            work_dir=work_dir, port=port, startup_timeout=startup_timeout, log_name="regcache.log"
        )
        self.cache_dir = Path(cache_dir or self.work_dir / "cache")
        self.extra_args = list(extra_args)
        self.command = list(command or [sys.executable, "-m", "proxy"])
        self.extra_env = dict(env or {})
        self.config_path = self.work_dir / "regcache.yml"
        self.write_config(config)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace the config; it takes effect at the next (re)start."""
        self.config = dict(config)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def argv(self) -> list[str]:
        return [
            *self.command,
            "serve",
            "--config",
            str(self.config_path),
            "--listen",
            self.host,
            "--cache-dir",
            str(self.cache_dir),
            *self.extra_args,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The package is not installed in CI; run it from this checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # REGCACHE_* variables override the config file; one leaking in from the developer's
        # shell would make the test's config a lie.
        for key in [k for k in env if k.startswith("REGCACHE_")]:
            del env[key]
        # One process unless the config says ``workers``: the tests count upstream requests, and
        # workers racing on a cold manifest may each ask for it (README, Operations).
        if "workers" not in self.config and not self.default_workers:
            env["REGCACHE_WORKERS"] = "1"
        env.update(self.extra_env)
        return env

    def cwd(self) -> Path:
        return REPO_ROOT

    def before_start(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"{'http' if self.client_ssl is None else 'https'}://{self.host}"

    def ready(self) -> bool:
        try:
            return self.get("/healthz", timeout=2).status == 200
        except OSError:
            return False

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> HttpResponse:
        return http_request(
            "GET", self.url + path, headers, timeout=timeout, ssl_context=self.client_ssl
        )

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        return http_request(method, self.url + path, headers, body, timeout, self.client_ssl)

    def metrics_text(self) -> str:
        resp = self.get("/metrics")
        if resp.status != 200:
            raise RegcacheError(f"GET /metrics answered {resp.status}: {resp.body[:500]!r}")
        return resp.body.decode()

    def metrics(self) -> dict[MetricKey, float]:
        """Every sample: ``(sample name, frozenset of label pairs) -> value``."""
        return parse_metrics(self.metrics_text())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``; 0 if none.

        A counter can be named with or without its ``_total`` suffix.
        """
        return sum_samples(self.metrics(), name, labels)

    def __repr__(self) -> str:
        return f"RegcacheProcess({self.url}, cache={self.cache_dir})"


def parse_metrics(text: str) -> dict[MetricKey, float]:
    samples: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = float(sample.value)
    return samples


def sum_samples(samples: Mapping[MetricKey, float], name: str, labels: Mapping[str, str]) -> float:
    names = {name, f"{name}_total"} if not name.endswith("_total") else {name}
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name in names and wanted <= sample_labels
    )
