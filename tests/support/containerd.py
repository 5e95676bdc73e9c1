"""containerd (Debian's ``containerd``) started by hand in a temporary directory, and ``ctr``.

Everything the daemon writes (root, state, sockets, the opt plugin's directory) stays in its
work directory; the CRI plugin and the snapshotters that need special filesystems are off.
Pulls unpack for real, into the ``native`` snapshotter (plain directories, works wherever root
can write).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .runtimes import SocketDaemon, render, require_binary, run, unix_socket_accepts

# One file per registry, at <hosts dir>/<registry>/hosts.toml (/etc/containerd/certs.d in the
# README). The README shows this template rendered; tests render it with their regcache.
HOSTS_TOML = """\
server = "$server"

[host."http://$regcache"]
  capabilities = ["pull", "resolve"]
"""

# Where each registry's own server is: what containerd would use without the mirror.
REGISTRY_SERVERS: Mapping[str, str] = {
    "docker.io": "https://registry-1.docker.io",
    "ghcr.io": "https://ghcr.io",
}

_CONFIG = """\
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = "$dir/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
"""

SNAPSHOTTER = "native"
_namespaces = itertools.count()


def hosts_toml(registry: str, regcache: str) -> str:
    """``hosts.toml`` for ``registry`` with regcache (``host:port``) as its pull mirror."""
    return render(HOSTS_TOML, server=REGISTRY_SERVERS[registry], regcache=regcache)


def chain_id(diff_ids: tuple[str, ...]) -> str:
    """The OCI image spec's ChainID of a stack of layers."""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def write_hosts_dir(directory: Path, regcache: str, registries: tuple[str, ...]) -> Path:
    for registry in registries:
        (directory / registry).mkdir(parents=True, exist_ok=True)
        (directory / registry / "hosts.toml").write_text(hosts_toml(registry, regcache))
    return directory


@dataclass(frozen=True)
class CtrImage:
    ref: str
    media_type: str
    digest: str
    platforms: tuple[str, ...]


class Containerd(SocketDaemon):
    label = "containerd"

    def __init__(self, work_dir: Path | None = None, startup_timeout: float = 30.0) -> None:
        self.binary = require_binary("containerd", "containerd")
        self.ctr_binary = require_binary("ctr", "containerd")
        super().__init__(work_dir=work_dir, startup_timeout=startup_timeout, log_name="daemon.log")
        self.config_path = self.work_dir / "config.toml"
        self.config_path.write_text(render(_CONFIG, dir=str(self.work_dir)))

    @property
    def address(self) -> Path:
        return self.work_dir / "containerd.sock"

    def argv(self) -> list[str]:
        return [self.binary, "--config", str(self.config_path)]

    def ready(self) -> bool:
        return unix_socket_accepts(self.address)

    def version(self) -> str:
        return run([self.binary, "--version"]).strip()

    def ctr(self, namespace: str, *args: str, timeout: float = 180.0) -> str:
        return run(
            [self.ctr_binary, "--address", str(self.address), "--namespace", namespace, *args],
            timeout=timeout,
        )

    def new_namespace(self) -> str:
        """A namespace of its own for one test, so its images are its own to list and remove."""
        return f"regcache-test-{next(_namespaces)}"

    def pull(
        self, namespace: str, ref: str, hosts_dir: Path, platform: str | None = None
    ) -> CtrImage:
        """``ctr images pull --hosts-dir``, unpacking into the native snapshotter."""
        args = ["images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", SNAPSHOTTER]
        if platform is not None:
            args += ["--platform", platform]
        self.ctr(namespace, *args, ref)
        return self.image(namespace, ref)

    def images(self, namespace: str) -> list[CtrImage]:
        found = []
        for line in self.ctr(namespace, "images", "ls").splitlines()[1:]:
            # REF TYPE DIGEST SIZE(two words) PLATFORMS LABELS
            fields = line.split()
            if len(fields) >= 6:
                platforms = tuple(fields[5].split(","))
                found.append(CtrImage(fields[0], fields[1], fields[2], platforms))
        return found

    def image(self, namespace: str, ref: str) -> CtrImage:
        for image in self.images(namespace):
            if image.ref == ref:
                return image
        raise KeyError(f"containerd namespace {namespace} has no image {ref}")

    def snapshots(self, namespace: str) -> set[str]:
        """The keys of the namespace's snapshots; a committed layer's key is its chain ID."""
        out = self.ctr(namespace, "snapshots", "--snapshotter", SNAPSHOTTER, "ls")
        return {ln.split()[0] for ln in out.splitlines()[1:] if ln.strip()}

    def unpacked(self, namespace: str, diff_ids: tuple[str, ...]) -> bool:
        """Whether an image with these layers (uncompressed digests) is unpacked: containerd
        commits each layer as a snapshot keyed by its chain ID, after checking its diff ID."""
        return chain_id(diff_ids) in self.snapshots(namespace)

    def content_digests(self, namespace: str) -> set[str]:
        out = self.ctr(namespace, "content", "ls", "-q")
        return {ln.strip() for ln in out.splitlines() if re.fullmatch(r"sha256:[0-9a-f]{64}", ln)}

    def remove_namespace(self, namespace: str) -> None:
        """Remove the namespace's images, garbage-collect their content and snapshots, and then
        the namespace itself: the next pull of the same image fetches everything again."""
        for image in self.images(namespace):
            self.ctr(namespace, "images", "rm", "--sync", image.ref)
        self.ctr(namespace, "namespaces", "rm", namespace)

    def __repr__(self) -> str:
        return f"Containerd({self.address})"
