"""Building the regcache image for real, where no container registry is reachable.

The Dockerfile's default base (``python:3.11.x-slim-bookworm``) comes from Docker Hub, which this
machine cannot reach. Its stand-in is made from Debian's own archive, which it can:
``debootstrap --variant=minbase bookworm`` with ``python3`` and ``python3-venv`` (Debian 12's
python3 is 3.11, like the pinned base), packed into a tarball for ``docker import``. The
Dockerfile only asks its base for ``python3 -m venv``, so the build runs unchanged with
``--build-arg BASE_IMAGE=<that image>``.

debootstrap takes a minute or more, so the tarball is kept in the tools cache
(``~/.cache/regcache-tools/base-images/``), named by suite, month and recipe: re-runs in the same
month only ``docker import`` it, and a new month picks up Debian's security updates.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .dockerd import Dockerd
from .helm import tools_dir
from .runtimes import require_binary, run

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# What the Dockerfile needs of its base, plus the CA bundle pip verifies PyPI with.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump when the recipe below changes, so cached tarballs made the old way are not reused.
RECIPE = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Build arguments docker predefines; passed on so that pip in the build finds PyPI the way
# this machine does.
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class ImageBuildError(RuntimeError):
    pass


def start_dockerd() -> Dockerd:
    """A started Docker Engine for building and running the image.

    overlay2 where the filesystem allows it: with the driver's default, vfs, every build step
    copies the whole root filesystem, and the build takes minutes instead of well under one.
    vfs is the fallback.
    """
    failures = []
    for driver in ("overlay2", "vfs"):
        # The Dockerd driver wants a registry mirror to configure; nothing here pulls.
        daemon = Dockerd("127.0.0.1:9")
        daemon.settings["storage-driver"] = driver
        daemon.config_path.write_text(json.dumps(daemon.settings, indent=2) + "\n")
        try:
            daemon.start()
        except RuntimeError as exc:
            close_dockerd(daemon)
            failures.append(f"{driver}: {exc}")
            continue
        return daemon
    raise ImageBuildError("dockerd did not start:\n" + "\n".join(failures))


def close_dockerd(daemon: Dockerd) -> None:
    """Stop the daemon and remove its directory, with the network-namespace mount dockerd
    leaves under its exec root (``exec/netns/default``), which would keep it from going."""
    work_dir = daemon.work_dir
    daemon.close()
    if work_dir.exists():
        _remove_tree(work_dir)


def base_images_dir() -> Path:
    return tools_dir() / "base-images"


def _ca_digest() -> str:
    # The host's bundle goes into the base (see make_base_tarball): a changed bundle means a
    # new tarball.
    data = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    return hashlib.sha256(data).hexdigest()[:12]


def base_key(today: datetime.date | None = None) -> str:
    month = (today or datetime.date.today()).strftime("%Y%m")
    return f"debian-{SUITE}-python3-{month}-r{RECIPE}-ca{_ca_digest()}"


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -r a debootstrap target. debootstrap mounts /proc and /sys inside it while it runs, and
    a failed run can leave them there: rmtree must never walk into the host's /proc or /sys."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = _mounts_under(path)
    if left:
        raise ImageBuildError(f"not removing {path}: still mounted under it: {left}")
    shutil.rmtree(path, ignore_errors=True)


def make_base_tarball(dest: Path, mirror: str, timeout: float = 900.0) -> None:
    """debootstrap a minimal Debian with Python into a tarball at ``dest``."""
    debootstrap = require_binary("debootstrap", "debootstrap")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rc-debootstrap-", dir=dest.parent))
    target = work / "root"
    try:
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(target),
            mirror,
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            log = target / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-4000:] if log.is_file() else proc.stdout + proc.stderr
            raise ImageBuildError(f"{' '.join(argv)} exited with {proc.returncode}:\n{detail}")
        # Package lists and caches are only ballast in an image; docs and man pages too.
        for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(target / junk, ignore_errors=True)
        # This machine may reach PyPI through a TLS-inspecting egress whose CA only the host's
        # bundle holds; pip in the build stage verifies with the base's bundle, so it gets the
        # host's. (A real python:slim base does not need this, nor does the Dockerfile.)
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, target / "etc/ssl/certs/ca-certificates.crt")
        partial = dest.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(target), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
            timeout=300,
        )
        partial.replace(dest)
    finally:
        _remove_tree(work)


def base_tarball() -> Path:
    """The cached base tarball for this month, made when missing; older ones are removed."""
    directory = base_images_dir()
    key = base_key()
    tarball = directory / f"{key}.tar"
    if not tarball.is_file():
        mirror = os.environ.get("REGCACHE_DEBIAN_MIRROR", DEFAULT_MIRROR)
        make_base_tarball(tarball, mirror)
        for old in directory.glob(f"debian-{SUITE}-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
    return tarball


def import_base(docker: Dockerd, tarball: Path) -> str:
    """``docker import`` the tarball (once per daemon); the image's reference."""
    ref = f"regcache-test-base:{tarball.stem}"
    try:
        docker.docker("image", "inspect", ref)
    except RuntimeError:
        docker.docker("import", str(tarball), ref, timeout=600)
    return ref


def git_revision() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"


def build_image(
    docker: Dockerd, base: str, tag: str, extra_args: Sequence[str] = (), timeout: float = 900.0
) -> float:
    """``docker build`` the repository's Dockerfile on ``base``; the seconds it took.

    ``--network host``: the daemon runs without a bridge (see Dockerd), so build containers
    share the host's network, which reaches PyPI.
    """
    args = [
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"REVISION={git_revision()}",
        "--build-arg",
        f"CREATED={datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    for var in PROXY_VARS:
        if os.environ.get(var):
            args += ["--build-arg", f"{var}={os.environ[var]}"]
    started = time.monotonic()
    docker.docker(*args, *extra_args, "--tag", tag, str(ROOT), timeout=timeout)
    return time.monotonic() - started


def inspect(docker: Dockerd, ref: str, what: str = "image") -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(docker.docker(what, "inspect", ref))
    return found[0]


@contextlib.contextmanager
def container(
    docker: Dockerd, image: str, options: Sequence[str], command: Sequence[str] = ()
) -> Iterator[str]:
    """``docker run --detach [options] image [command]``: the container's id; it is removed,
    with its volumes, afterwards."""
    container_id = docker.docker("run", "--detach", *options, image, *command).strip()
    try:
        yield container_id
    finally:
        with contextlib.suppress(RuntimeError):
            docker.docker("rm", "--force", "--volumes", container_id)


def wait_healthy(docker: Dockerd, container_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Wait until the image's HEALTHCHECK reports healthy; its State.Health."""
    deadline = time.monotonic() + timeout
    while True:
        state = inspect(docker, container_id, "container")["State"]
        health: dict[str, Any] = state.get("Health") or {}
        if health.get("Status") == "healthy":
            return health
        if (
            not state["Running"]
            or health.get("Status") == "unhealthy"
            or time.monotonic() > deadline
        ):
            raise AssertionError(
                f"container not healthy: {json.dumps(state, indent=1)}\n"
                f"logs:\n{logs(docker, container_id)[-4000:]}"
            )
        time.sleep(0.5)


def logs(docker: Dockerd, container_id: str) -> str:
    """What the container wrote; regcache logs to stderr, which ``Dockerd.docker`` drops."""
    cli = [docker.cli, "-H", f"unix://{docker.socket}"]
    return run([*cli, "logs", container_id], with_stderr=True)
