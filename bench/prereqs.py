"""The system tools the benchmark drives, installed from Debian's archive when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

# tool on PATH -> the Debian package that ships it
TOOLS: dict[str, str] = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "nginx": "nginx",
    "curl": "curl",
}
# What a fleet of replicas (--replicas) shares: Redis, and S3 from a Ceph cluster.
FLEET_TOOLS: dict[str, str] = {
    "redis-server": "redis-server",
    "radosgw": "radosgw",
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "ceph": "ceph-common",
}
# nginx lives in /usr/sbin, which a non-login root shell may not have on PATH.
_EXTRA_DIRS = ("/usr/sbin", "/sbin")


class MissingTool(RuntimeError):
    pass


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found is not None:
        return found
    for directory in _EXTRA_DIRS:
        candidate = os.path.join(directory, tool)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_tools(install: bool = True, fleet: bool = False) -> dict[str, str]:
    """Every tool's path; installs missing packages with apt-get when allowed and root.
    ``fleet``: the fleet's tools too."""
    tools = TOOLS | FLEET_TOOLS if fleet else TOOLS
    missing = _missing(tools)
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing missing Debian package(s): {' '.join(missing)}", flush=True)
        if not _apt_install(missing):
            # A fresh machine may have no package lists yet; one update, then try again.
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            _apt_install(missing)
        missing = _missing(tools)
    if missing:
        packages = " ".join(missing)
        raise MissingTool(
            f"bench needs the Debian package(s) {packages}, which are not installed; "
            f"run: apt-get update && apt-get install -y {packages}"
        )
    return {tool: path for tool in tools if (path := which(tool)) is not None}


def _missing(tools: dict[str, str]) -> list[str]:
    return sorted({pkg for tool, pkg in tools.items() if which(tool) is None})


def _apt_install(packages: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        check=False,
    )
    return done.returncode == 0
