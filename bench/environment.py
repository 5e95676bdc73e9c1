"""What the figures were measured on: the machine, the load on it, and every version."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support.regcache import REPO_ROOT

from .prereqs import which


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_total_bytes": _meminfo("MemTotal"),
        "kernel": platform.release(),
        "os": _os_release(),
    }


def load_average() -> list[float]:
    """Other work on the box competes for the same two cores; recorded, not controlled."""
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict[str, str | None]:
    from proxy import __version__

    return {
        "regcache": f"{__version__} ({_git_revision()})",
        "nginx": _tool_version(["nginx", "-v"]),
        "distribution": _tool_version(["docker-registry", "--version"]),
        "skopeo": _tool_version(["skopeo", "--version"]),
        "curl": _tool_version(["curl", "--version"]),
        "python": sys.version.split()[0],
        "aiohttp": _package("aiohttp"),
        "uvloop": _package("uvloop"),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def _tool_version(argv: list[str]) -> str | None:
    binary = which(argv[0])
    if binary is None:
        return None
    done = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, check=False)
    # nginx -v writes to stderr; the others to stdout.
    text = (done.stdout or done.stderr).strip()
    if not text:
        return None
    # "curl 7.88.1 (x86_64...) libcurl/..." and "/usr/bin/docker-registry github.com/...
    # 2.8.2+ds1": the program's own version is enough.
    first = text.splitlines()[0]
    if argv[0] == "curl":
        return " ".join(first.split()[:2])
    if argv[0] == "docker-registry":
        return " ".join(first.split()[1:])
    return first


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str:
    """The commit, and "+ local changes" when the tree differs from it: figures of a dirty
    tree describe code no commit holds."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "proxy"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return f"{rev} + local changes to proxy/" if dirty else rev
