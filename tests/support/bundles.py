"""Bundles made with the real command line (``python -m proxy export/import``) as subprocesses,
on a cache directory of their own, for the integration and runtime tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .regcache import REPO_ROOT, RegcacheProcess

# The standard images as a client names them on the docker.io upstream.
SMALL = "docker.io/library/small:1.0"
MULTI = "docker.io/library/multi:1.0"
APP = "docker.io/org/app:1.0"


@dataclass(frozen=True)
class CacheDir:
    """A cache directory and the config naming the upstreams the commands may use."""

    config: Path
    cache_dir: Path

    @classmethod
    def make(cls, work_dir: Path, upstreams: Sequence[dict[str, Any]]) -> CacheDir:
        work_dir.mkdir(parents=True, exist_ok=True)
        config = work_dir / "regcache.yml"
        config.write_text(yaml.safe_dump({"upstreams": list(upstreams)}, sort_keys=False))
        return cls(config, work_dir / "cache")

    def run(self, *argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``regcache COMMAND ARGS... --config --cache-dir``; whatever its exit status."""
        command, *rest = argv
        full = [sys.executable, "-m", "proxy", command, *rest]
        full += ["--config", str(self.config), "--cache-dir", str(self.cache_dir)]
        return subprocess.run(
            full, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        done = self.run(*argv, timeout=timeout)
        assert done.returncode == 0, f"regcache {' '.join(argv)}: {done.returncode}\n{done.stderr}"
        return done

    def server(self, work_dir: Path, *extra: str) -> RegcacheProcess:
        """``regcache serve`` on this cache directory (not started)."""
        config = yaml.safe_load(self.config.read_text())
        return RegcacheProcess(
            config, work_dir=work_dir, cache_dir=self.cache_dir, extra_args=list(extra)
        )
