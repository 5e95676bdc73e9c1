"""Which upstream and repository a request goes to: ?ns= > path prefix > default upstream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import Config, UpstreamConfig
from proxy.errors import NameUnknown
from proxy.oci.names import MAX_NAME_LENGTH, is_valid_name
from proxy.routing import Router, Target

DOCKER = UpstreamConfig("docker.io", "https://registry-1.docker.io", aliases=("index.docker.io",))
GHCR = UpstreamConfig("ghcr.io", "https://ghcr.io")
QUAY = UpstreamConfig("quay.io", "https://quay.io")
PRIVATE = UpstreamConfig(
    "registry.example.com", "https://registry.example.com", aliases=("mirror", "reg")
)
UPSTREAMS = (DOCKER, GHCR, QUAY, PRIVATE)


def labels(upstream: UpstreamConfig) -> tuple[str, ...]:
    return (upstream.name, *upstream.aliases)


LABELS = frozenset(label for up in UPSTREAMS for label in labels(up))


def make_router(default: str = "docker.io") -> Router:
    return Router(Config(upstreams=UPSTREAMS, default_upstream=default))


@pytest.fixture
def router() -> Router:
    return make_router()


_alphanumerics = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_components = st.one_of(
    st.builds(
        lambda first, rest: first + "".join(sep + run for sep, run in rest),
        _alphanumerics,
        st.lists(st.tuples(st.sampled_from([".", "_", "__", "-"]), _alphanumerics), max_size=3),
    ),
    st.sampled_from(sorted(LABELS | {"library", "example.com"})),
)
valid_names = (
    st.lists(_components, min_size=1, max_size=5)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_NAME_LENGTH)
)


# --- the default upstream -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "repository"),
    [
        ("nginx", "library/nginx"),
        ("library/nginx", "library/nginx"),
        ("bitnami/redis", "bitnami/redis"),
        ("a/b/c", "a/b/c"),
        ("example.com/app", "example.com/app"),  # not a configured upstream
    ],
)
def test_default_upstream(router: Router, name: str, repository: str) -> None:
    assert router.route(name, None) == Target(DOCKER, repository)


@pytest.mark.parametrize("name", ["ghcr.io", "docker.io", "mirror", "index.docker.io"])
def test_upstream_name_alone_is_a_default_upstream_repository(router: Router, name: str) -> None:
    assert router.route(name, None) == Target(DOCKER, f"library/{name}")


def test_library_prefix_only_on_docker_hub() -> None:
    router = make_router(default="ghcr.io")
    assert router.route("app", None) == Target(GHCR, "app")
    assert router.route("quay.io", None) == Target(GHCR, "quay.io")


def test_default_upstream_given_by_alias() -> None:
    assert make_router(default="mirror").route("app", None) == Target(PRIVATE, "app")


def test_unconfigured_default_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="nowhere"):
        Router(Config(upstreams=(GHCR,), default_upstream="nowhere"))


# --- path prefixes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ghcr.io/org/app", Target(GHCR, "org/app")),
        ("ghcr.io/app", Target(GHCR, "app")),  # no library/ outside Docker Hub
        ("quay.io/coreos/etcd", Target(QUAY, "coreos/etcd")),
        ("docker.io/nginx", Target(DOCKER, "library/nginx")),
        ("docker.io/library/nginx", Target(DOCKER, "library/nginx")),
        ("docker.io/bitnami/redis", Target(DOCKER, "bitnami/redis")),
        ("index.docker.io/nginx", Target(DOCKER, "library/nginx")),
        ("mirror/team/app", Target(PRIVATE, "team/app")),
        ("reg/app", Target(PRIVATE, "app")),
        ("registry.example.com/app", Target(PRIVATE, "app")),
        # Only the first component names an upstream.
        ("ghcr.io/quay.io/app", Target(GHCR, "quay.io/app")),
        ("docker.io/ghcr.io", Target(DOCKER, "library/ghcr.io")),
        ("org/ghcr.io/app", Target(DOCKER, "org/ghcr.io/app")),
    ],
)
def test_path_prefix(router: Router, name: str, expected: Target) -> None:
    assert router.route(name, None) == expected


# --- ?ns= -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ns", "expected"),
    [
        ("org/app", "ghcr.io", Target(GHCR, "org/app", "ghcr.io")),
        ("app", "ghcr.io", Target(GHCR, "app", "ghcr.io")),
        ("nginx", "docker.io", Target(DOCKER, "library/nginx", "docker.io")),
        ("library/nginx", "docker.io", Target(DOCKER, "library/nginx", "docker.io")),
        ("nginx", "index.docker.io", Target(DOCKER, "library/nginx", "index.docker.io")),
        ("app", "mirror", Target(PRIVATE, "app", "mirror")),
        # ns wins over a path prefix: the whole name is the repository.
        ("ghcr.io/org/app", "quay.io", Target(QUAY, "ghcr.io/org/app", "quay.io")),
        ("quay.io/app", "docker.io", Target(DOCKER, "quay.io/app", "docker.io")),
        ("ghcr.io", "docker.io", Target(DOCKER, "library/ghcr.io", "docker.io")),
    ],
)
def test_ns(router: Router, name: str, ns: str, expected: Target) -> None:
    assert router.route(name, ns) == expected


@pytest.mark.parametrize("ns", ["", "nowhere.example", "GHCR.IO", "ghcr.io/org", "x" * 1000])
def test_unknown_ns_is_name_unknown(router: Router, ns: str) -> None:
    with pytest.raises(NameUnknown) as caught:
        router.route("app", ns)
    error = caught.value
    assert error.http_status == 404
    assert error.error_code == "NAME_UNKNOWN"
    assert error.detail["ns"] == ns[:255]
    assert sorted(error.detail["known"]) == sorted(LABELS)
    assert len(error.message) < 200


def test_unknown_ns_does_not_fall_back_to_a_path_prefix(router: Router) -> None:
    with pytest.raises(NameUnknown):
        router.route("ghcr.io/org/app", "nowhere.example")


# --- properties -----------------------------------------------------------------------


@given(valid_names)
def test_routes_without_ns(name: str) -> None:
    target = make_router().route(name, None)
    first, _, rest = name.partition("/")
    if rest and first in LABELS:
        assert first in labels(target.upstream)
        stripped = rest
    else:
        assert target.upstream is DOCKER
        stripped = name
    expected = (
        f"library/{stripped}" if target.upstream is DOCKER and "/" not in stripped else stripped
    )
    assert target.repository == expected
    assert target.namespace is None


@given(valid_names, st.sampled_from(sorted(LABELS)))
def test_routes_with_ns(name: str, ns: str) -> None:
    target = make_router().route(name, ns)
    assert ns in labels(target.upstream)
    assert target.namespace == ns
    if target.upstream is DOCKER and "/" not in name:
        assert target.repository == f"library/{name}"
    else:
        assert target.repository == name


@given(valid_names, st.one_of(st.none(), st.sampled_from(sorted(LABELS))))
def test_repository_is_always_a_valid_name(name: str, ns: str | None) -> None:
    target = make_router().route(name, ns)
    # "library/" can push a 255-character name past the limit; the rest must stay valid.
    assert is_valid_name(target.repository) or len(target.repository) > MAX_NAME_LENGTH
