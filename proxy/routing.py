"""Which upstream and repository a request is for. Pure code.

Three forms, in this order of precedence:
1. ``?ns=<registry>``, sent by containerd mirrors on every request;
2. a first path component naming an upstream (``/v2/ghcr.io/org/app/...``), as podman
   mirrors with a path and ``FROM cache:5000/ghcr.io/...`` send;
3. everything else goes to the default upstream (Docker's ``registry-mirrors``).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Config, UpstreamConfig
from proxy.errors import NameInvalid, NameUnknown
from proxy.model import Credentials, RepoRef
from proxy.oci.imageref import InvalidImage, parse_image
from proxy.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class Target:
    upstream: UpstreamConfig
    repository: str
    namespace: str | None = None  # the ns= the client sent, echoed as OCI-Namespace
    # On a passthrough upstream, the requesting client's own (None: it gave none).
    credentials: Credentials | None = None

    @property
    def ref(self) -> RepoRef:
        return RepoRef(self.upstream.name, self.repository)

    def image(self, reference: Reference) -> str:
        """The full, canonical reference: ``docker.io/library/alpine:3.20``."""
        separator = "@" if reference.digest is not None else ":"
        return f"{self.upstream.name}/{self.repository}{separator}{reference}"


class Router:
    def __init__(self, config: Config) -> None:
        self._config = config
        default = config.upstream(config.default_upstream)
        if default is None:
            raise ValueError(f"default upstream {config.default_upstream!r} is not configured")
        self._default = default

    def route(self, name: str, ns: str | None) -> Target:
        """``name`` is a repository name that already passed validation."""
        if ns is not None:
            upstream = self._config.upstream(ns)
            if upstream is None:
                raise NameUnknown(
                    f"no upstream is configured for namespace {ns[:100]!r}",
                    detail={"ns": ns[:255], "known": self._known()},
                )
            return Target(upstream, self._repository(upstream, name), ns)
        first, _, rest = name.partition("/")
        if rest:
            upstream = self._config.upstream(first)
            if upstream is not None:
                return Target(upstream, self._repository(upstream, rest))
        return Target(self._default, self._repository(self._default, name))

    def route_image(self, text: str) -> tuple[Target, Reference]:
        """An image reference as a command line names it; its registry must be a configured
        upstream or alias. Raises InvalidImage, naming what is wrong."""
        image = parse_image(text)
        upstream = self._config.upstream(image.registry)
        if upstream is None:
            known = ", ".join(self._known())
            raise InvalidImage(f"{text[:200]!r}: no upstream is named {image.registry!r} ({known})")
        return Target(upstream, self._repository(upstream, image.name)), image.reference

    @staticmethod
    def _repository(upstream: UpstreamConfig, name: str) -> str:
        if upstream.is_docker_hub and "/" not in name:
            return f"library/{name}"
        if not name:
            raise NameInvalid("repository name is empty")
        return name

    def upstream_names(self) -> tuple[str, ...]:
        return tuple(up.name for up in self._config.upstreams)

    def _known(self) -> list[str]:
        return [name for up in self._config.upstreams for name in (up.name, *up.aliases)]
