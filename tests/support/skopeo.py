"""Thin wrappers around ``skopeo copy`` / ``skopeo inspect`` for plain-HTTP loopback registries.

Every call passes its own policy and an empty auth file, so the results do not depend on
``/etc/containers`` or on credentials lying around on the machine.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .images import OCI_INDEX, OCI_MANIFEST, REF_NAME, blob_path

DEFAULT_TIMEOUT = 120.0


class SkopeoError(RuntimeError):
    """A skopeo command failed; the message carries its command line and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited with {returncode}"
        shown = [
            "USER:***" if prev in ("--creds", "--src-creds", "--dest-creds") else arg
            for prev, arg in zip(["", *argv], argv, strict=False)
        ]
        super().__init__(f"skopeo {status}: {' '.join(shown)}\n{stderr.strip()}")


@dataclass(frozen=True)
class PulledImage:
    """What ``skopeo copy ... dir:OUT`` wrote: the manifest as served, and blobs by digest."""

    out_dir: Path

    @property
    def manifest(self) -> bytes:
        return (self.out_dir / "manifest.json").read_bytes()

    def manifest_json(self) -> Any:
        return json.loads(self.manifest)

    def instance_manifest(self, digest: str) -> bytes:
        """With ``--all``, each platform's manifest is stored beside the index."""
        return (self.out_dir / f"{digest.partition(':')[2]}.manifest.json").read_bytes()

    def blob(self, digest: str) -> bytes:
        return (self.out_dir / digest.partition(":")[2]).read_bytes()

    def has_blob(self, digest: str) -> bool:
        return (self.out_dir / digest.partition(":")[2]).is_file()


def skopeo_binary() -> str:
    path = shutil.which("skopeo")
    if path is None:
        raise RuntimeError(
            "skopeo is not installed; the integration tests need it (apt-get install skopeo)"
        )
    return path


_support_dir: Path | None = None


def _support_files() -> Path:
    """A per-process directory holding a permissive policy and an empty auth file."""
    global _support_dir
    if _support_dir is None:
        d = Path(tempfile.mkdtemp(prefix="regcache-skopeo-"))
        (d / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (d / "auth.json").write_text(json.dumps({"auths": {}}))
        atexit.register(shutil.rmtree, d, True)
        _support_dir = d
    return _support_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = str(_support_files() / "auth.json")
    # Tests talk to 127.0.0.1 only; a proxy from the environment would break that.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    return env


def _global_args() -> list[str]:
    return [skopeo_binary(), "--policy", str(_support_files() / "policy.json")]


def _creds_args(side: str, creds: tuple[str, str] | None) -> list[str]:
    if creds is None:
        return [f"--{side}-no-creds"]
    return [f"--{side}-creds", f"{creds[0]}:{creds[1]}"]


def _with_digest(src: str, digest: str) -> str:
    """``host:port/repo:tag`` -> ``host:port/repo@digest`` (the port's colon is kept)."""
    name = src.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return f"{name}@{digest}"


def push_argv(
    source: str,
    dest: str,
    creds: tuple[str, str] | None = None,
    all_images: bool = False,
) -> list[str]:
    argv = [*_global_args(), "copy", "--retry-times", "0", "--dest-tls-verify=false"]
    # Without this skopeo may rewrite the manifest, and tests compare digests with the layout.
    argv.append("--preserve-digests")
    if all_images:
        argv.append("--all")
    argv += _creds_args("dest", creds)
    argv += [source, f"docker://{dest}"]
    return argv


def _layout_descriptor(layout_dir: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout_dir / "index.json").read_bytes())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get(REF_NAME) == tag:
            found: dict[str, Any] = desc
            return found
    raise KeyError(f"{layout_dir} has no tag {tag!r}")


def _stage_dir_transport(layout_dir: Path, descriptor: Mapping[str, Any], into: Path) -> None:
    """Lay an image out for skopeo's ``dir:`` transport, linking the layout's blobs.

    skopeo 1.9's ``oci:`` transport ignores index.json entries with Docker media types, so
    Docker-flavoured test images go through ``dir:``, which copies manifests byte for byte.
    """

    def link_blob(digest: str) -> None:
        target = into / digest.partition(":")[2]
        if not target.exists():
            source = blob_path(layout_dir, digest)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)

    def manifest_blobs(manifest: Mapping[str, Any]) -> None:
        link_blob(manifest["config"]["digest"])
        for layer in manifest["layers"]:
            link_blob(layer["digest"])

    into.mkdir(parents=True)
    (into / "version").write_text("Directory Transport Version: 1.1\n")
    top = blob_path(layout_dir, descriptor["digest"]).read_bytes()
    (into / "manifest.json").write_bytes(top)
    parsed = json.loads(top)
    if "manifests" in parsed:
        for child in parsed["manifests"]:
            data = blob_path(layout_dir, child["digest"]).read_bytes()
            (into / f"{child['digest'].partition(':')[2]}.manifest.json").write_bytes(data)
            manifest_blobs(json.loads(data))
    else:
        manifest_blobs(parsed)


def pull_argv(
    src: str,
    out_dir: Path,
    creds: tuple[str, str] | None = None,
    all_images: bool = False,
    by_digest: str | None = None,
    platform: tuple[str, str] | None = None,
    cert_dir: Path | None = None,
) -> list[str]:
    if by_digest is not None:
        src = _with_digest(src, by_digest)
    argv = [*_global_args()]
    if platform is not None:
        argv += ["--override-os", platform[0], "--override-arch", platform[1]]
    argv += ["copy", "--retry-times", "0", "--preserve-digests"]
    # With a cert dir the registry is verified against its *.crt CAs (and is shown the
    # *.cert/*.key client pair there); without one it is a plain-HTTP test registry.
    if cert_dir is None:
        argv.append("--src-tls-verify=false")
    else:
        argv += ["--src-tls-verify=true", "--src-cert-dir", str(cert_dir)]
    if all_images:
        argv.append("--all")
    argv += _creds_args("src", creds)
    argv += [f"docker://{src}", f"dir:{out_dir}"]
    return argv


def _run(argv: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=_env(), check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise SkopeoError(argv, None, stderr) from exc
    if proc.returncode != 0:
        raise SkopeoError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def push(
    layout_dir: Path,
    tag: str,
    dest: str,
    creds: tuple[str, str] | None = None,
    all_images: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Copy ``oci:layout_dir:tag`` to ``docker://dest`` (e.g. ``127.0.0.1:5000/library/x:1``)."""
    layout_dir = Path(layout_dir)
    if not (layout_dir / "oci-layout").is_file():
        raise FileNotFoundError(f"{layout_dir} is not an OCI layout")
    descriptor = _layout_descriptor(layout_dir, tag)
    if descriptor["mediaType"] in (OCI_INDEX, OCI_MANIFEST):
        _run(push_argv(f"oci:{layout_dir}:{tag}", dest, creds, all_images), timeout)
        return
    with tempfile.TemporaryDirectory(prefix="regcache-push-", dir=layout_dir.parent) as tmp:
        staged = Path(tmp) / "image"
        _stage_dir_transport(layout_dir, descriptor, staged)
        _run(push_argv(f"dir:{staged}", dest, creds, all_images), timeout)


def pull(
    src: str,
    out_dir: Path,
    creds: tuple[str, str] | None = None,
    all_images: bool = False,
    by_digest: str | None = None,
    platform: tuple[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cert_dir: Path | None = None,
) -> PulledImage:
    """Copy ``docker://src`` (or ``src``'s repository at ``by_digest``) into ``dir:out_dir``.

    ``platform`` is ``(os, arch)``; it picks the instance of a multi-platform image.
    ``cert_dir`` makes it an HTTPS pull, verified with the CAs there (see pull_argv).
    """
    out_dir = Path(out_dir)
    _run(pull_argv(src, out_dir, creds, all_images, by_digest, platform, cert_dir), timeout)
    return PulledImage(out_dir)


async def pull_async(
    src: str,
    out_dir: Path,
    creds: tuple[str, str] | None = None,
    all_images: bool = False,
    by_digest: str | None = None,
    platform: tuple[str, str] | None = None,
) -> PulledImage:
    """Like :func:`pull`, without blocking the event loop (for concurrent pulls).

    Wrap it in ``asyncio.timeout()`` for a deadline shorter than the default; skopeo is
    killed when the call is cancelled.
    """
    out_dir = Path(out_dir)
    argv = pull_argv(src, out_dir, creds, all_images, by_digest, platform)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            _, stderr = await proc.communicate()
    except BaseException:
        # Cancelled or timed out: leave no skopeo running behind the test.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise SkopeoError(argv, proc.returncode, stderr.decode(errors="replace"))
    return PulledImage(out_dir)


def inspect_raw(
    src: str,
    creds: tuple[str, str] | None = None,
    by_digest: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """The manifest (or index) bytes exactly as the registry serves them."""
    if by_digest is not None:
        src = _with_digest(src, by_digest)
    argv = [*_global_args(), "inspect", "--raw", "--retry-times", "0", "--tls-verify=false"]
    argv += ["--no-creds"] if creds is None else ["--creds", f"{creds[0]}:{creds[1]}"]
    argv.append(f"docker://{src}")
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=_env(), check=False)
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(argv, None, "") from exc
    if proc.returncode != 0:
        raise SkopeoError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def copy_from_archive(
    archive: Path, name: str, out_dir: Path, all_images: bool = False
) -> PulledImage:
    """``skopeo copy oci-archive:ARCHIVE:NAME dir:OUT``: the image an OCI layout tar archive
    names ``name`` (its ``org.opencontainers.image.ref.name``), as a pull would write it."""
    argv = [*_global_args(), "copy", "--preserve-digests"]
    argv += ["--all"] if all_images else []
    _run([*argv, f"oci-archive:{archive}:{name}", f"dir:{out_dir}"], DEFAULT_TIMEOUT)
    return PulledImage(Path(out_dir))


def copy_to_archive(src: str, archive: Path, name: str) -> None:
    """``skopeo copy docker://SRC oci-archive:ARCHIVE:NAME`` from a plain-HTTP registry."""
    argv = [*_global_args(), "copy", "--src-tls-verify=false", "--src-no-creds"]
    _run([*argv, f"docker://{src}", f"oci-archive:{archive}:{name}"], DEFAULT_TIMEOUT)
