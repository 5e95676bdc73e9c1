"""The README's runtime configuration snippets are the ones these tests configure runtimes with.

Each runtime driver renders its snippet from a template; rendered for the README's address, it
has to appear in README.md word for word.
"""

from __future__ import annotations

import pytest

from tests.support import containerd, dockerd, podman
from tests.support.runtimes import README_REGCACHE, readme_text, render

pytestmark = pytest.mark.runtimes


@pytest.mark.parametrize("registry", ["docker.io", "ghcr.io"])
def test_containerd_hosts_toml(registry: str) -> None:
    assert containerd.hosts_toml(registry, README_REGCACHE) in readme_text()


def test_docker_daemon_json() -> None:
    assert render(dockerd.DAEMON_JSON, regcache=README_REGCACHE) in readme_text()


def test_podman_registries_conf() -> None:
    conf = podman.registries_conf(README_REGCACHE, ["docker.io", "ghcr.io"])
    assert conf in readme_text()
