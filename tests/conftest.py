"""Shared fixtures: real upstream registries on 127.0.0.1 and a factory for the proxy under test.

The integration fixtures fail (never skip) when ``docker-registry`` or ``skopeo`` is missing:
CI installs both, and a silently skipped suite would look green while testing nothing.
"""

# The imports below have to follow the sys.path fix.
# ruff: noqa: E402
from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Plain `pytest` puts tests/ (not the checkout) on sys.path; `tests.support` needs the checkout.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pytest
from hypothesis import settings

from tests.support.ceph import CephCluster
from tests.support.faults import FaultyUpstream
from tests.support.redisserver import RedisServer
from tests.support.regcache import RegcacheProcess
from tests.support.registry import Registry
from tests.support.upstreams import (
    BASIC_CREDS,
    MAIN_REPOS,
    SECOND_REPOS,
    TOKEN_CREDS,
    TOKEN_USERS,
    RegcacheFactory,
    RegistryFactory,
    Upstream,
    UpstreamImages,
    build_standard_images,
    push_repos,
)

# Test modules import these from here too; tests.support.upstreams is their home.
__all__ = ["BASIC_CREDS", "TOKEN_CREDS", "TOKEN_USERS", "RegcacheFactory", "RegistryFactory"]

# Coverage tracing (scripts/test.sh's fast run), a first import inside an example or a busy
# machine push single examples past Hypothesis' 200 ms deadline now and then (a config fuzz
# example took 723 ms under coverage): failures that say nothing about the code under test.
settings.register_profile("regcache", deadline=None)
settings.load_profile("regcache")

INTEGRATION_FIXTURES = frozenset(
    {
        "integration_tools",
        "test_images",
        "upstream",
        "basic_upstream",
        "token_upstream",
        "second_upstream",
        "registry_factory",
        "regcache_factory",
        "faulty",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Lets `-m "not integration"` select the fast unit tests without per-test decorators.
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def integration_tools() -> None:
    missing = [tool for tool in ("docker-registry", "skopeo") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"integration tests need {' and '.join(missing)} on PATH "
            "(apt-get install docker-registry skopeo)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> UpstreamImages:
    return build_standard_images(tmp_path_factory.mktemp("oci-layout"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Debian ``redis-server`` for the session; tests keep apart by key prefix."""
    with RedisServer(work_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


def _start_registry(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> Registry:
    registry = Registry(work_dir=tmp_path_factory.mktemp(name), **kwargs)
    registry.start()
    return registry


@pytest.fixture(scope="session")
def upstream(
    integration_tools: None,
    test_images: UpstreamImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upstream]:
    """Plain registry with ``library/small:1.0``, ``library/multi:1.0``, ``org/app:1.0``."""
    registry = _start_registry(tmp_path_factory, "upstream")
    try:
        push_repos(registry, test_images, MAIN_REPOS)
        yield Upstream(registry, test_images, tuple(r for r, _ in MAIN_REPOS))
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def basic_upstream(
    integration_tools: None,
    test_images: UpstreamImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upstream]:
    """Same content as ``upstream`` behind htpasswd (``alice``/``s3cret``)."""
    registry = _start_registry(tmp_path_factory, "basic-upstream", htpasswd=BASIC_CREDS)
    try:
        push_repos(registry, test_images, MAIN_REPOS, creds=BASIC_CREDS)
        yield Upstream(registry, test_images, tuple(r for r, _ in MAIN_REPOS), BASIC_CREDS)
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def token_upstream(
    integration_tools: None,
    test_images: UpstreamImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upstream]:
    """Same content behind Bearer-token auth, like Docker Hub.

    ``upstream.token_server`` is the :class:`TokenServer`: users ``alice``/``s3cret`` (pull,
    push) and ``bob``/``hunter2`` (pull); anonymous clients may pull ``library/*`` only.
    """
    from tests.support.tokenserver import TokenServer  # needs `cryptography` (test extras)

    storage = tmp_path_factory.mktemp("token-upstream-storage")
    # Filling the storage through an open registry first is faster than pushing with tokens
    # and keeps the token server's request list empty for the tests.
    seeder = _start_registry(tmp_path_factory, "token-upstream-seed", storage_dir=storage)
    try:
        push_repos(seeder, test_images, MAIN_REPOS)
    finally:
        seeder.stop()
    tokens = TokenServer(
        TOKEN_USERS,
        work_dir=tmp_path_factory.mktemp("token-server"),
        public_prefixes=("library/",),
        push_users=["alice"],
    )
    tokens.start()
    try:
        registry = _start_registry(
            tmp_path_factory,
            "token-upstream",
            storage_dir=storage,
            token_auth=tokens.registry_settings(),
        )
        try:
            yield Upstream(
                registry,
                test_images,
                tuple(r for r, _ in MAIN_REPOS),
                TOKEN_CREDS,
                token_server=tokens,
            )
        finally:
            registry.stop()
    finally:
        tokens.stop()


@pytest.fixture(scope="session")
def second_upstream(
    integration_tools: None,
    test_images: UpstreamImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upstream]:
    """Another plain registry, holding ``org/tool:2.0`` (stands in for e.g. ghcr.io)."""
    registry = _start_registry(tmp_path_factory, "second-upstream")
    try:
        push_repos(registry, test_images, SECOND_REPOS)
        yield Upstream(registry, test_images, tuple(r for r, _ in SECOND_REPOS))
    finally:
        registry.stop()


@pytest.fixture
def registry_factory(
    integration_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryFactory]:
    """Private, started registries for tests that stop, restart or mutate one."""
    registries: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        kwargs.setdefault("work_dir", tmp_path_factory.mktemp("registry"))
        registry = Registry(**kwargs)
        registries.append(registry)
        registry.start()
        return registry

    yield make
    for registry in registries:
        registry.stop()


@pytest.fixture
def regcache_factory(
    integration_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegcacheFactory]:
    """``make(config, **RegcacheProcess kwargs)`` starts the proxy; all are stopped at teardown.

    The proxies' logs are printed at teardown, so pytest shows them when a test fails.
    """
    procs: list[RegcacheProcess] = []

    def make(config: dict[str, Any], **kwargs: Any) -> RegcacheProcess:
        kwargs.setdefault("work_dir", tmp_path_factory.mktemp("regcache"))
        proc = RegcacheProcess(config, **kwargs)
        procs.append(proc)
        proc.start()
        return proc

    yield make
    for proc in procs:
        proc.stop()
        print(f"--- {proc!r} log (last 20000 chars) ---\n{proc.log_text()[-20000:]}")


@pytest.fixture
def faulty(upstream: Upstream) -> Iterator[FaultyUpstream]:
    """A fault-injecting server in front of ``upstream``; tests set ``faulty.faults``."""
    server = FaultyUpstream(upstream.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw() -> Iterator[CephCluster]:
    """A Ceph cluster answering S3 (``rgw.endpoint``) for the session. ``rgw.rgw.kill()`` and
    ``rgw.rgw.start()`` stage an outage of the gateway; its data stays in the OSD."""
    with CephCluster() as cluster:
        yield cluster
