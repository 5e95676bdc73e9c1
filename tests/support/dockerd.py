"""Docker Engine (Debian's ``docker.io``) started by hand in a temporary directory, and ``docker``.

The daemon gets its data root, exec root, socket, pid file and trust key in its work directory;
it starts a containerd of its own under the exec root. Nothing touches the host's network:
no bridge, no iptables rules. Images are stored with the ``vfs`` driver, which works on any
filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runtimes import SocketDaemon, render, require_binary, run, unix_http_get

# The README shows this rendered; the tests merge SANDBOX into the same document.
DAEMON_JSON = """\
{
  "registry-mirrors": ["http://$regcache"]
}
"""

# What a daemon started inside a test needs on top of the README's settings.
SANDBOX: dict[str, Any] = {
    "iptables": False,
    "ip6tables": False,
    "bridge": "none",
    "storage-driver": "vfs",
}


def daemon_json(regcache: str) -> dict[str, Any]:
    """The README's ``daemon.json`` for a regcache at ``regcache`` (``host:port``)."""
    settings: dict[str, Any] = json.loads(render(DAEMON_JSON, regcache=regcache))
    return settings


@dataclass(frozen=True)
class DockerImage:
    id: str  # the config's digest
    repo_digests: tuple[str, ...]  # "name@sha256:..." of the manifest (list) pulled


def docker_cli() -> str:
    # The client from the same package as the daemon; another `docker` may come first on PATH.
    packaged = "/usr/bin/docker"
    return packaged if os.access(packaged, os.X_OK) else require_binary("docker", "docker.io")


class Dockerd(SocketDaemon):
    label = "dockerd"

    def __init__(
        self, regcache: str, work_dir: Path | None = None, startup_timeout: float = 60.0
    ) -> None:
        self.binary = require_binary("dockerd", "docker.io")
        self.cli = docker_cli()
        super().__init__(work_dir=work_dir, startup_timeout=startup_timeout, log_name="daemon.log")
        self.config_path = self.work_dir / "daemon.json"
        self.settings = {**daemon_json(regcache), **SANDBOX}
        if self.daemon_version() < (23,):
            # Before 23.0 Docker writes a trust key to /etc/docker unless told otherwise.
            self.settings["deprecated-key-path"] = str(self.work_dir / "key.json")
        self.config_path.write_text(json.dumps(self.settings, indent=2) + "\n")

    def daemon_version(self) -> tuple[int, ...]:
        """(20, 10, 24) from ``dockerd --version``: ``Docker version 20.10.24+dfsg1, build ...``."""
        m = re.search(r"version (\d+)\.(\d+)\.(\d+)", run([self.binary, "--version"]))
        if m is None:
            raise RuntimeError(f"cannot tell the version of {self.binary}")
        return tuple(int(part) for part in m.groups())

    @property
    def socket(self) -> Path:
        return self.work_dir / "docker.sock"

    @property
    def exec_root(self) -> Path:
        return self.work_dir / "exec"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--config-file",
            str(self.config_path),
            "--data-root",
            str(self.work_dir / "data"),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.work_dir / "docker.pid"),
            "-H",
            f"unix://{self.socket}",
        ]

    def ready(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            status, body = unix_http_get(self.socket, "/_ping")
        except OSError:
            return False
        return status == 200 and body == b"OK"

    def stop(self, timeout: float = 20.0) -> int | None:
        code = super().stop(timeout)
        # dockerd stops the containerd it started; after a SIGKILL that one is left behind.
        pid_file = self.exec_root / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            # Only that containerd: the pid may have been reused once it exited.
            if str(self.exec_root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        return code

    def docker(self, *args: str, timeout: float = 180.0) -> str:
        return run([self.cli, "-H", f"unix://{self.socket}", *args], timeout=timeout)

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").strip()

    def info(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.docker("info", "--format", "{{json .}}"))
        return parsed

    def pull(self, ref: str) -> DockerImage:
        self.docker("pull", ref)
        return self.image(ref)

    def image(self, ref: str) -> DockerImage:
        found = json.loads(self.docker("image", "inspect", ref))[0]
        return DockerImage(found["Id"], tuple(found.get("RepoDigests") or ()))

    def remove_all_images(self) -> None:
        ids = self.docker("images", "--all", "--quiet", "--no-trunc").split()
        if ids:
            self.docker("rmi", "--force", *sorted(set(ids)))

    def __repr__(self) -> str:
        return f"Dockerd({self.socket})"
