"""Fixtures of the fleet tests (test_replicas*.py): an upstream holding the fleet's images, a
throttling server in front of it, and a factory of fleets sharing the session's Redis and
Ceph gateway under prefixes of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import skopeo
from tests.support.ceph import CephCluster
from tests.support.images import ImageInfo, build_image
from tests.support.redisserver import RedisServer
from tests.support.registry import Registry
from tests.support.replicas import Replicas, SharedBackends
from tests.support.throttle import ThrottledUpstream

KIB = 1024
MIB = 1024 * KIB
BUCKET = "regcache-replicas"
# repository:tag -> (seed, layer sizes): one image with a layer of tens of MB, to be killed
# in the middle of, and three small ones.
FLEET_IMAGES = {
    "fleet/big:1": (121, (256 * KIB, MIB, 24 * MIB)),
    "fleet/one:1": (122, (300 * KIB, 700 * KIB, MIB)),
    "fleet/two:1": (123, (300 * KIB, 700 * KIB, MIB)),
    "fleet/three:1": (124, (300 * KIB, 700 * KIB, MIB)),
}

FleetFactory = Callable[..., Replicas]


@dataclass(frozen=True)
class FleetUpstream:
    registry: Registry
    images: Mapping[str, ImageInfo]  # by "repository:tag"


@pytest.fixture(scope="session")
def fleet_upstream(
    integration_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetUpstream]:
    layout = tmp_path_factory.mktemp("fleet-layout")
    registry = Registry(work_dir=tmp_path_factory.mktemp("fleet-upstream"))
    registry.start()
    try:
        images = {}
        for ref, (seed, sizes) in FLEET_IMAGES.items():
            tag = ref.split("/")[1].replace(":", "-")
            images[ref] = build_image(layout, tag, seed=seed, layer_sizes=sizes)
            skopeo.push(layout, tag, f"{registry.host}/{ref}")
        yield FleetUpstream(registry, images)
    finally:
        registry.stop()


@pytest.fixture
def throttled(fleet_upstream: FleetUpstream) -> Iterator[ThrottledUpstream]:
    """The fleet's upstream behind a server whose blob rate a test may limit."""
    server = ThrottledUpstream(fleet_upstream.registry.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_fleet(
    fleet_upstream: FleetUpstream,
    redis_server: RedisServer,
    rgw: CephCluster,
    tmp_path: Path,
) -> Iterator[FleetFactory]:
    """``make_fleet(count=3, upstream_url=None, redis=None, settings=None)``: started replicas
    sharing ``redis`` (default: the session's) and the session's gateway, cold."""
    rgw.create_bucket(BUCKET)
    fleets: list[Replicas] = []

    def make(
        count: int = 3,
        upstream_url: str | None = None,
        redis: RedisServer | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Replicas:
        backends = SharedBackends.fresh((redis or redis_server).url, rgw.endpoint, BUCKET)
        fleet = Replicas(
            upstream_url or fleet_upstream.registry.url,
            backends,
            tmp_path / f"fleet{len(fleets)}",
            count=count,
            settings=settings,
        )
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()
        print(fleet.logs())
