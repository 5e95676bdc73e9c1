"""Configuration: parsed once into immutable objects.

Precedence, lowest first: embedded defaults < YAML file < ``REGCACHE_<KEY>`` environment
variables (top-level keys) < command-line flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TAG_TTL = 300.0

BUILTIN_UPSTREAMS: tuple[tuple[str, str], ...] = (
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("gcr.io", "https://gcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
)


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str  # scheme://host[:port], no trailing slash
    aliases: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None  # already resolved from password_file / password_env
    tag_ttl: float = DEFAULT_TAG_TTL
    tls_verify: bool = True

    @property
    def is_docker_hub(self) -> bool:
        """One-component names get ``library/`` on Docker Hub, as Docker itself does."""
        return self.name == "docker.io"


@dataclass(frozen=True)
class Config:
    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    cache_dir: Path = field(default_factory=lambda: Path("regcache-cache"))
    default_upstream: str = "docker.io"
    upstreams: tuple[UpstreamConfig, ...] = tuple(
        UpstreamConfig(name=n, url=u) for n, u in BUILTIN_UPSTREAMS
    )
    log_level: str = "info"

    def upstream(self, name: str) -> UpstreamConfig | None:
        for up in self.upstreams:
            if up.name == name or name in up.aliases:
                return up
        return None
