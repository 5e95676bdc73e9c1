"""podman (Debian's ``podman``) with its storage, run state, temporary files and configuration
all in one directory of the test's: no daemon, nothing read from /etc/containers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .runtimes import render, require_binary, run

# One block per registry in registries.conf; the README shows it rendered. regcache's path-prefix
# form (/v2/<registry>/<name>/...) tells it which upstream a request is for.
REGISTRIES_CONF_ENTRY = """\
[[registry]]
prefix = "$registry"
location = "$registry"

[[registry.mirror]]
location = "$regcache/$registry"
insecure = true
"""


def registries_conf(regcache: str, registries: Iterable[str]) -> str:
    """registries.conf mirroring each of ``registries`` through regcache (``host:port``)."""
    return "\n".join(
        render(REGISTRIES_CONF_ENTRY, registry=registry, regcache=regcache)
        for registry in registries
    )


@dataclass(frozen=True)
class PodmanImage:
    id: str  # hex of the config's digest
    digest: str  # the manifest (list) digest the reference resolved to
    repo_digests: tuple[str, ...]


class Podman:
    """``podman`` with ``--root``, ``--runroot`` and ``--tmpdir`` under ``work_dir``."""

    def __init__(self, work_dir: Path, regcache: str, registries: Iterable[str]) -> None:
        self.binary = require_binary("podman", "podman")
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "tmp").mkdir(exist_ok=True)
        self.registries_conf = self.work_dir / "registries.conf"
        self.registries_conf.write_text(registries_conf(regcache, registries))
        self.containers_conf = self.work_dir / "containers.conf"
        self.containers_conf.write_text('[engine]\nevents_logger = "file"\n')
        self.auth_file = self.work_dir / "auth.json"
        self.auth_file.write_text(json.dumps({"auths": {}}))
        self.policy = self.work_dir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    def _env(self) -> dict[str, str]:
        return {
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "CONTAINERS_CONF": str(self.containers_conf),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
            # Where image layers are staged while they are pulled (default /var/tmp).
            "TMPDIR": str(self.work_dir / "tmp"),
        }

    def podman(self, *args: str, timeout: float = 180.0) -> str:
        argv = [
            self.binary,
            "--root",
            str(self.work_dir / "root"),
            "--runroot",
            str(self.work_dir / "runroot"),
            "--tmpdir",
            str(self.work_dir / "libpod"),
            "--network-config-dir",
            str(self.work_dir / "networks"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *args,
        ]
        return run(argv, env=self._env(), timeout=timeout)

    def version(self) -> str:
        return self.podman("version", "--format", "{{.Client.Version}}").strip()

    def pull(self, ref: str, platform: str | None = None) -> PodmanImage:
        args = ["pull", "--signature-policy", str(self.policy)]
        if platform is not None:
            args += ["--platform", platform]
        self.podman(*args, ref)
        return self.image(ref)

    def image(self, ref: str) -> PodmanImage:
        found = json.loads(self.podman("image", "inspect", ref))[0]
        return PodmanImage(found["Id"], found["Digest"], tuple(found.get("RepoDigests") or ()))

    def remove_all_images(self) -> None:
        self.podman("rmi", "--all", "--force")
