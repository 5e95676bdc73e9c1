"""A fleet of three replicas through outages of what it shares, and its eviction: cached
content is served while Redis and then S3 are down, caching and sharing come back with them,
and the bucket stays under cache.max_size whichever replicas filled it."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

from proxy.fleet.leases import RETRY_SECONDS
from tests.integration.conftest import MIB, FleetFactory, FleetUpstream
from tests.integration.test_replicas import wait_stored
from tests.support import skopeo
from tests.support.ceph import CephCluster
from tests.support.fleetclients import check_image, pull_all
from tests.support.httpclient import http_request
from tests.support.images import OCI_MANIFEST, ImageInfo
from tests.support.redisserver import RedisServer
from tests.support.replicas import Replicas
from tests.support.throttle import ThrottledUpstream
from tests.support.waiting import wait_until


class Rounds(threading.Thread):
    """Pulls of one cached image, round after round on every replica, until stopped: skopeo,
    and raw GETs of the manifest by tag and of each blob. ``failures`` says what went wrong
    in which ``phase`` (the test sets the phase as it stages outages)."""

    def __init__(self, fleet: Replicas, repository: str, image: ImageInfo, out: Path) -> None:
        super().__init__(name="pull-rounds", daemon=True)
        self.fleet, self.repository, self.image, self.out = fleet, repository, image, out
        self.phase = "before"
        self.failures: list[str] = []
        self.done = 0
        self._halt = threading.Event()

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        while not self._halt.is_set():
            for i, replica in enumerate(self.fleet):
                phase = self.phase
                try:
                    self._pull(replica.ref(self.repository, "1"), self.out / f"{self.done}-{i}")
                    self._raw_gets(replica.url)
                except Exception as exc:  # every failure is the finding, whatever its type
                    self.failures.append(f"{phase}, {replica!r}: {exc}")
            self.done += 1

    def _pull(self, ref: str, out: Path) -> None:
        check_image(skopeo.pull(ref, out), self.image)

    def _raw_gets(self, url: str) -> None:
        base = f"{url}/v2/{self.repository}"
        got = http_request("GET", f"{base}/manifests/1", {"Accept": OCI_MANIFEST}, timeout=30)
        assert (got.status, got.body) == (200, self.image.manifest), f"manifest: {got.status}"
        for digest in self.image.blob_digests:
            got = http_request("GET", f"{base}/blobs/{digest}", timeout=30)
            assert got.status == 200, f"{digest}: {got.status}"
            assert got.body == self.image.blob(digest), f"{digest}: wrong bytes"

    def wait_rounds(self, count: int) -> None:
        """Until ``count`` more rounds have run, all of them since the call."""
        target = self.done + count + 1
        wait_until(lambda: self.done >= target or not self.is_alive(), f"{count} rounds", 300)

    def stop(self) -> None:
        self._halt.set()
        self.join(300)


def test_cached_content_is_served_while_redis_then_s3_are_down_and_caching_recovers(
    fleet_upstream: FleetUpstream,
    make_fleet: FleetFactory,
    rgw: CephCluster,
    tmp_path: Path,
) -> None:
    one, two = fleet_upstream.images["fleet/one:1"], fleet_upstream.images["fleet/two:1"]
    with RedisServer(work_dir=tmp_path / "redis") as redis:
        fleet = make_fleet(redis=redis)
        check_image(skopeo.pull(fleet[0].ref("fleet/one", "1"), tmp_path / "warm"), one)
        wait_stored(fleet, one)
        rounds = Rounds(fleet, "fleet/one", one, tmp_path / "rounds")
        rounds.start()
        try:
            rounds.wait_rounds(1)
            rounds.phase = "Redis down"
            redis.stop()
            rounds.wait_rounds(2)
            rounds.phase = "Redis and S3 down"
            rgw.rgw.kill()
            rounds.wait_rounds(2)
            rounds.phase = "both back"
            rgw.rgw.start()
            redis.start()
            fleet.wait_ready()
            rounds.wait_rounds(2)
        finally:
            rounds.stop()
            rgw.rgw.start()  # the session's gateway, back for the tests after this one
        assert rounds.failures == []

        # Caching is back: what one replica fetched, the others serve from the bucket and
        # the index without asking the upstream.
        check_image(skopeo.pull(fleet[0].ref("fleet/two", "1"), tmp_path / "two"), two)
        wait_stored(fleet, two)
        mark = fleet_upstream.registry.mark()
        for i, replica in enumerate(fleet.replicas[1:]):
            check_image(skopeo.pull(replica.ref("fleet/two", "1"), tmp_path / f"two{i}"), two)
        assert fleet_upstream.registry.requests(since=mark) == []


def test_sharing_resumes_when_redis_comes_back(
    fleet_upstream: FleetUpstream,
    throttled: ThrottledUpstream,
    make_fleet: FleetFactory,
    tmp_path: Path,
) -> None:
    one, three = fleet_upstream.images["fleet/one:1"], fleet_upstream.images["fleet/three:1"]
    throttled.rate = 2 * MIB  # each layer takes long enough for every replica to ask
    with RedisServer(work_dir=tmp_path / "redis") as redis:
        fleet = make_fleet(redis=redis, upstream_url=throttled.url)
        redis.stop()
        # Unshared while Redis is out, and served all the same.
        check_image(skopeo.pull(fleet[0].ref("fleet/one", "1"), tmp_path / "out"), one)
        redis.start()
        fleet.wait_ready()
        # A replica whose lease call failed tries Redis again only after this long, while
        # /readyz asks afresh: until then its downloads are still its own.
        time.sleep(RETRY_SECONDS)
        mark = fleet_upstream.registry.mark()

        pulled = pull_all([(fleet[i % 3], "fleet/three:1") for i in range(6)], tmp_path / "p")

    for image in pulled:
        check_image(image, three)
    gets = {
        digest: fleet_upstream.registry.count(
            "GET", rf"/v2/.+/blobs/{re.escape(digest)}", since=mark
        )
        for digest in three.blob_digests
    }
    assert gets == dict.fromkeys(three.blob_digests, 1)


def test_eviction_keeps_the_bucket_under_max_size(
    fleet_upstream: FleetUpstream, make_fleet: FleetFactory, tmp_path: Path
) -> None:
    names = ("fleet/one", "fleet/two", "fleet/three")
    images = [fleet_upstream.images[f"{name}:1"] for name in names]
    pulled_bytes = sum(len(i.config) + sum(i.layer_sizes) for i in images)
    # Each replica alone stays within the bound; together they do not.
    max_size = 5 * MIB // 2
    assert pulled_bytes > 2 * max_size
    fleet = make_fleet(settings={"cache": {"max_size": max_size}})

    for i, (replica, name, image) in enumerate(zip(fleet, names, images, strict=True)):
        check_image(skopeo.pull(replica.ref(name, "1"), tmp_path / f"pull{i}"), image)

    seen: list[int] = []

    def within() -> bool:
        seen.append(fleet.backends.bucket_bytes())
        return 0 < seen[-1] <= max_size

    with contextlib.suppress(AssertionError):
        wait_until(within, "an eviction pass", 60)
    assert 0 < seen[-1] <= max_size, f"the bucket holds {seen[-1]} bytes (pulled {pulled_bytes})"
    # Still a cache: the most recent image pulls whole from any replica.
    check_image(skopeo.pull(fleet[0].ref("fleet/three", "1"), tmp_path / "again"), images[2])
