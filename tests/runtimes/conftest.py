"""Real container runtimes pulling through regcache: containerd, Docker Engine, podman, helm.

Each runtime is started here, as root, in a temporary directory, and stopped at the end of the
session; one regcache (``runtime_cache``) in front of the session's upstreams serves them all:
``docker.io`` is the ``upstream`` registry, ``ghcr.io`` is ``second_upstream``. Each test leaves
its runtime without the images it pulled, so the next pull of the same image fetches it again.

The fixtures fail (never skip) when a runtime is missing: ``scripts/test.sh`` installs them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.containerd import Containerd, write_hosts_dir
from tests.support.dockerd import Dockerd
from tests.support.helm import Helm, HelmUnavailable, install_helm
from tests.support.podman import Podman
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import SocketDaemon, short_tmpdir, with_json_logs
from tests.support.upstreams import Upstream

REGISTRIES = ("docker.io", "ghcr.io")
D = TypeVar("D", bound=SocketDaemon)


def _started(make: Callable[[], D], what: str) -> D:
    try:
        daemon = make()
    except RuntimeError as exc:
        pytest.fail(f"cannot run {what}: {exc}", pytrace=False)
    try:
        daemon.start()
    except RuntimeError as exc:
        daemon.close()
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    return daemon


@pytest.fixture(scope="session")
def runtime_cache(
    upstream: Upstream, second_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegcacheProcess]:
    """The regcache every runtime is pointed at."""
    proc = RegcacheProcess(
        with_json_logs(
            {
                "default_upstream": "docker.io",
                "upstreams": [upstream.entry("docker.io"), second_upstream.entry("ghcr.io")],
            }
        ),
        work_dir=tmp_path_factory.mktemp("runtime-regcache"),
    )
    proc.start()
    yield proc
    proc.stop()
    print(f"--- {proc!r} log (last 20000 chars) ---\n{proc.log_text()[-20000:]}")


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    daemon = _started(Containerd, "containerd")
    yield daemon
    daemon.close()


@pytest.fixture
def ctr_ns(containerd: Containerd) -> Iterator[str]:
    """A containerd namespace for one test; its images, content and snapshots go at the end."""
    namespace = containerd.new_namespace()
    yield namespace
    containerd.remove_namespace(namespace)


@pytest.fixture
def hosts_dir(runtime_cache: RegcacheProcess, tmp_path: Path) -> Path:
    """A containerd hosts directory (``certs.d``) naming regcache for docker.io and ghcr.io."""
    return write_hosts_dir(tmp_path / "certs.d", runtime_cache.host, REGISTRIES)


@pytest.fixture(scope="session")
def dockerd(runtime_cache: RegcacheProcess) -> Iterator[Dockerd]:
    daemon = _started(lambda: Dockerd(runtime_cache.host), "dockerd")
    yield daemon
    daemon.close()


@pytest.fixture
def docker(dockerd: Dockerd) -> Iterator[Dockerd]:
    """The session's Docker Engine, emptied of images after the test."""
    yield dockerd
    dockerd.remove_all_images()


@pytest.fixture
def podman(runtime_cache: RegcacheProcess) -> Iterator[Podman]:
    """podman with storage of its own for this test, mirroring docker.io and ghcr.io."""
    # podman refuses a --runroot longer than 50 characters; pytest's tmp_path can be longer.
    work_dir = short_tmpdir("podman")
    yield Podman(work_dir, runtime_cache.host, REGISTRIES)
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    try:
        return install_helm()
    except HelmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def helm(helm_binary: Path, tmp_path: Path) -> Helm:
    return Helm(helm_binary, tmp_path / "helm")
