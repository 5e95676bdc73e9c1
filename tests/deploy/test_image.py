"""The container image, built from the Dockerfile and run with a Docker Engine of the tests' own
(Debian's docker.io, started by hand by tests.support.dockerd: no bridge, no iptables; overlay2
storage where the filesystem allows, see tests.support.imagebuild.start_dockerd).

No registry is reachable here, so the base is a debootstrapped Debian 12 with Python 3.11 in place
of python:3.11-slim-bookworm (see tests.support.imagebuild); the Dockerfile is built unchanged
with ``--build-arg BASE_IMAGE``. Cold (debootstrap, then the build, whose pip fetches the
dependencies from PyPI) this takes two to four minutes; the base tarball is cached per month,
after which the module takes about one.
"""

from __future__ import annotations

import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import CliOverrides, load_config
from tests.support.certs import CertificateAuthority
from tests.support.dockerd import Dockerd
from tests.support.httpclient import http_request
from tests.support.imagebuild import (
    base_tarball,
    build_image,
    close_dockerd,
    container,
    import_base,
    inspect,
    logs,
    start_dockerd,
    wait_healthy,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.image

TAG = "regcache:image-test"


@pytest.fixture(scope="module")
def docker() -> Iterator[Dockerd]:
    try:
        daemon = start_dockerd()
    except RuntimeError as exc:
        pytest.fail(f"cannot run dockerd: {exc}", pytrace=False)
    yield daemon
    close_dockerd(daemon)


@pytest.fixture(scope="module")
def image(docker: Dockerd) -> str:
    started = time.monotonic()
    tarball = base_tarball()
    base = import_base(docker, tarball)
    base_seconds = time.monotonic() - started
    build_seconds = build_image(docker, base, TAG)
    # For the record in CI's log: how the few minutes of this module are spent.
    print(f"image: base {base_seconds:.0f}s ({tarball.name}), build {build_seconds:.0f}s")
    return TAG


def test_image_metadata(docker: Dockerd, image: str) -> None:
    config = inspect(docker, image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["ExposedPorts"] == {"5000/tcp": {}}
    assert config["Volumes"] == {"/var/lib/regcache": {}}
    assert config["Entrypoint"] == ["regcache"]
    assert config["Cmd"] == ["serve", "--config", "/etc/regcache/config.yaml"]
    health = config["Healthcheck"]
    assert health["Test"] == ["CMD", "python3", "-m", "proxy.healthcheck"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "regcache"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.base.name"].startswith("regcache-test-base:")
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_default_config_serves_on_5000_and_reports_healthy(
    docker: Dockerd, image: str, tmp_path: Path
) -> None:
    # --network none: the container's own loopback only, so the default listen address and
    # port are what the HEALTHCHECK reaches; nothing on the host can collide with it.
    options = ["--network", "none", "--read-only", "--health-interval", "1s"]
    with container(docker, image, options) as cid:
        health = wait_healthy(docker, cid)
        assert health["Log"][-1]["ExitCode"] == 0
        shipped = docker.docker("exec", cid, "cat", "/etc/regcache/config.yaml")
        (tmp_path / "config.yaml").write_text(shipped)
        config = load_config(tmp_path / "config.yaml", {}, CliOverrides())
        assert (config.listen_host, config.listen_port) == ("0.0.0.0", 5000)
        assert str(config.cache_dir) == "/var/lib/regcache"
        assert "Running on http://0.0.0.0:5000" in logs(docker, cid)


def test_runs_as_non_root_on_a_read_only_root_filesystem(docker: Dockerd, image: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The daemon has no bridge (see Dockerd), so no -p: the host's network, with the port
    # moved through REGCACHE_LISTEN, which the HEALTHCHECK follows too.
    options = [
        "--network",
        "host",
        "--read-only",
        "--env",
        f"REGCACHE_LISTEN=127.0.0.1:{port}",
        # Not the default loop, but the image ships the extra: it must load.
        "--env",
        "REGCACHE_EVENT_LOOP=uvloop",
        "--health-interval",
        "1s",
    ]
    with container(docker, image, options) as cid:
        wait_healthy(docker, cid)
        assert http_request("GET", f"{base}/healthz").status == 200
        # /readyz: the cache directory (the volume, the only writable path) is writable.
        assert http_request("GET", f"{base}/readyz").status == 200
        assert http_request("GET", f"{base}/v2/").status == 200
        metrics = http_request("GET", f"{base}/metrics")
        assert b"regcache_cache_size_bytes" in metrics.body

        assert docker.docker("exec", cid, "id", "-u").strip() == "10001"
        # Every process, not only an exec'd one (docker needs the pid column to map them).
        top = docker.docker("top", cid, "-o", "pid,uid,args").splitlines()[1:]
        assert top
        assert all(line.split()[1] == "10001" for line in top), top
        owner = docker.docker("exec", cid, "stat", "-c", "%u:%g", "/var/lib/regcache")
        assert owner.strip() == "10001:10001"
        with pytest.raises(RuntimeError, match="Read-only file system"):
            docker.docker("exec", cid, "touch", "/etc/regcache/x")
        # The uvloop extra made it into the image.
        assert "event loop: uvloop" in logs(docker, cid)

        # regcache is PID 1 and handles SIGTERM itself: a clean, quick exit.
        started = time.monotonic()
        docker.docker("stop", "--time", "20", cid)
        assert time.monotonic() - started < 15
        assert inspect(docker, cid, "container")["State"]["ExitCode"] == 0


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_healthcheck_passes_when_regcache_serves_https(
    docker: Dockerd, image: str, tmp_path: Path, mutual: bool
) -> None:
    ca = CertificateAuthority()
    certs = tmp_path / "tls"
    ca.server().write(certs, "server")
    ca.write(certs / "ca.crt")
    for path in [certs, *certs.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's UID 10001
    port = free_port()
    env = {
        "REGCACHE_LISTEN": f"127.0.0.1:{port}",
        "REGCACHE_TLS_CERT_FILE": "/run/secrets/regcache-tls/server.crt",
        "REGCACHE_TLS_KEY_FILE": "/run/secrets/regcache-tls/server.key",
    }
    client = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if mutual:
        env["REGCACHE_TLS_CLIENT_CA_FILE"] = "/run/secrets/regcache-tls/ca.crt"
        client.load_cert_chain(*ca.client().write(tmp_path / "client", "client"))
    options = ["--network", "host", "--read-only", "--health-interval", "1s"]
    options += ["--volume", f"{certs}:/run/secrets/regcache-tls:ro"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    with container(docker, image, options) as cid:
        health = wait_healthy(docker, cid)
        assert health["Log"][-1]["ExitCode"] == 0
        url = f"https://127.0.0.1:{port}/healthz"
        assert http_request("GET", url, ssl_context=client).status == 200
        assert f"Running on https://127.0.0.1:{port}" in logs(docker, cid)


def test_no_curl_or_compiler_in_the_image(docker: Dockerd, image: str) -> None:
    # The health check needs neither; and the wheels were built in the first stage.
    script = "command -v curl gcc pip || true"
    options = ["--network", "none", "--entrypoint", "sh"]
    with container(docker, image, options, ["-c", f"{script}; sleep 30"]) as cid:
        found = docker.docker("exec", cid, "sh", "-c", script).strip()
    assert found == ""


def test_debootstrap_is_available() -> None:
    # The base stand-in needs it; scripts/test.sh installs it. Failing here names the cause
    # plainly when the module's fixture would fail with a longer story.
    assert shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin")
