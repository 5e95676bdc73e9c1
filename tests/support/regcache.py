"""The proxy under test (``python -m proxy serve``) as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .httpclient import HttpResponse, http_request
from .ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

MetricKey = tuple[str, frozenset[tuple[str, str]]]


class RegcacheError(RuntimeError):
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


class RegcacheProcess:
    """Runs the proxy with a YAML config written from ``config``; restartable on the same port
    and cache dir, so tests can check what survives a restart or a crash (:meth:`kill`)."""

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
    ) -> None:
        """``command`` replaces ``python -m proxy`` (the harness's own tests use a stand-in)."""
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="regcache-proxy-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir or self.work_dir / "cache")
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.command = list(command or [sys.executable, "-m", "proxy"])
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.config_path = self.work_dir / "regcache.yml"
        self.log_path = self.work_dir / "regcache.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.write_config(config)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace the config; it takes effect at the next (re)start."""
        self.config = dict(config)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ref(self, repository: str, tag_or_digest: str) -> str:
        """``127.0.0.1:PORT/repo:tag`` or ``...@sha256:...``, as skopeo wants it."""
        sep = "@" if ":" in tag_or_digest else ":"
        return f"{self.host}/{repository}{sep}{tag_or_digest}"

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

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The package is not installed in CI; run it from this checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # REGCACHE_* variables override the config file; one leaking in from the developer's
        # shell would make the test's config a lie.
        for key in [k for k in env if k.startswith("REGCACHE_")]:
            del env[key]
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.running:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._close_log()
                raise RegcacheError(f"regcache exited with {code} at startup:\n{self.log_text()}")
            try:
                if self.get("/healthz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RegcacheError(
                    f"regcache did not answer 200 on {self.url}/healthz within "
                    f"{self.startup_timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL after ``timeout``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        self._close_log()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, leaving whatever half-written state the cache has."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._close_log()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> HttpResponse:
        return http_request("GET", self.url + path, headers, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        return http_request(method, self.url + path, headers, body, timeout)

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
