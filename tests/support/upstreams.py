"""The standard test images and the upstream registries the integration fixtures serve them from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import skopeo
from .images import ImageInfo, IndexInfo, build_image, build_index
from .regcache import RegcacheProcess, upstream_entry
from .registry import Registry

if TYPE_CHECKING:
    from .tokenserver import TokenServer

KIB = 1024
MIB = 1024 * KIB

# Credentials of the fixtures' authenticated upstreams.
BASIC_CREDS = ("alice", "s3cret")
TOKEN_USERS = {"alice": "s3cret", "bob": "hunter2"}  # bob may only pull
TOKEN_CREDS = ("alice", "s3cret")

# The conftest factories: make(config, **RegcacheProcess kwargs) / make(**Registry kwargs).
RegcacheFactory = Callable[..., RegcacheProcess]
RegistryFactory = Callable[..., Registry]


@dataclass(frozen=True)
class UpstreamImages:
    """Every standard test image, all in one OCI layout (shared blobs are stored once).

    Layout tags: ``small``, ``multi``, ``app``, ``docker-multi``, ``tool``; the registries hold
    them as ``library/small:1.0``, ``library/multi:1.0``, ``org/app:1.0``,
    ``library/docker-multi:1.0`` (main upstreams) and ``org/tool:2.0`` (second upstream).
    """

    layout_dir: Path
    small: ImageInfo  # OCI, 3 layers: 300 KiB, 1 MiB, 2 MiB; seed 1
    multi: IndexInfo  # OCI index: linux/amd64 + linux/arm64
    app: ImageInfo  # OCI, 2 layers
    docker_multi: IndexInfo  # Docker manifest list of Docker schema 2 manifests, small layers
    tool: ImageInfo  # OCI, 2 layers


# (repository:tag in the registry, tag in the layout)
MAIN_REPOS: tuple[tuple[str, str], ...] = (
    ("library/small:1.0", "small"),
    ("library/multi:1.0", "multi"),
    ("org/app:1.0", "app"),
    ("library/docker-multi:1.0", "docker-multi"),
)
SECOND_REPOS: tuple[tuple[str, str], ...] = (("org/tool:2.0", "tool"),)


def build_standard_images(layout_dir: Path) -> UpstreamImages:
    return UpstreamImages(
        layout_dir=layout_dir,
        small=build_image(layout_dir, "small", seed=1, layer_sizes=[300 * KIB, MIB, 2 * MIB]),
        multi=build_index(layout_dir, "multi", seed=2, layer_sizes=[256 * KIB, 512 * KIB]),
        app=build_image(layout_dir, "app", seed=3, layer_sizes=[512 * KIB, 1536 * KIB]),
        docker_multi=build_index(
            layout_dir, "docker-multi", seed=5, layer_sizes=[100 * KIB, 200 * KIB], flavor="docker"
        ),
        tool=build_image(layout_dir, "tool", seed=4, layer_sizes=[200 * KIB, 700 * KIB]),
    )


def push_repos(
    registry: Registry,
    images: UpstreamImages,
    repos: tuple[tuple[str, str], ...],
    creds: tuple[str, str] | None = None,
) -> None:
    for dest, layout_tag in repos:
        skopeo.push(
            images.layout_dir,
            layout_tag,
            f"{registry.host}/{dest}",
            creds=creds,
            all_images=layout_tag in ("multi", "docker-multi"),
        )


@dataclass
class Upstream:
    """A running upstream registry plus what it holds and how to log in to it."""

    registry: Registry
    images: UpstreamImages
    repos: tuple[str, ...]  # "repository:tag" entries pushed to it
    creds: tuple[str, str] | None = None
    token_server: TokenServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def host(self) -> str:
        return self.registry.host

    def ref(self, repository: str, tag_or_digest: str) -> str:
        return self.registry.ref(repository, tag_or_digest)

    def entry(self, name: str = "docker.io", **kwargs: Any) -> dict[str, Any]:
        """This registry as an item of the proxy config's ``upstreams`` list."""
        kwargs.setdefault("creds", self.creds)
        return upstream_entry(name, self.url, **kwargs)
