"""Three ``regcache serve`` processes sharing one Redis and one bucket behave as one cache:
one upstream fetch per blob however many clients ask on whichever replica, a download that
goes on when its owner is SIGKILLed, and a replica on an empty disk that is warm at once.

Outages and eviction across the fleet: test_replicas_outages.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import MIB, FleetFactory, FleetUpstream
from tests.support import skopeo
from tests.support.fleetclients import BlobReader, check_image, pull_all
from tests.support.images import ImageInfo
from tests.support.replicas import Replicas
from tests.support.throttle import ThrottledUpstream
from tests.support.waiting import wait_until

BIG = "fleet/big:1"
ONE = "fleet/one:1"


def blob_gets(upstream: FleetUpstream, digest: str, since: int, status: int | None = None) -> int:
    """GETs of ``digest`` the upstream served since the mark (any status unless given)."""
    return upstream.registry.count(
        "GET", rf"/v2/.+/blobs/{re.escape(digest)}", since, status=status
    )


def wait_stored(fleet: Replicas, image: ImageInfo) -> None:
    """Until every blob of ``image`` is in the bucket: a client may have all the bytes a
    moment before the upload that stores them completes."""
    total = len(image.config) + sum(image.layer_sizes)
    wait_until(lambda: fleet.backends.bucket_bytes() >= total, f"{image.tag} in the bucket")


def test_sixteen_clients_on_three_replicas_fetch_each_blob_once(
    fleet_upstream: FleetUpstream,
    throttled: ThrottledUpstream,
    make_fleet: FleetFactory,
    tmp_path: Path,
) -> None:
    image = fleet_upstream.images[BIG]
    # Slow enough that every client asks while the big layer is still on its way.
    throttled.rate = 16 * MIB
    fleet = make_fleet(upstream_url=throttled.url)
    mark = fleet_upstream.registry.mark()

    pulled = pull_all([(fleet[i % len(fleet)], BIG) for i in range(16)], tmp_path / "pulls")

    for one in pulled:
        check_image(one, image)
    gets = {digest: blob_gets(fleet_upstream, digest, mark) for digest in image.blob_digests}
    assert gets == dict.fromkeys(image.blob_digests, 1)


def test_a_follower_takes_the_download_over_when_its_owner_is_killed(
    fleet_upstream: FleetUpstream,
    throttled: ThrottledUpstream,
    make_fleet: FleetFactory,
    tmp_path: Path,
) -> None:
    image = fleet_upstream.images[BIG]
    size, digest = max(zip(image.layer_sizes, image.layer_digests, strict=True))
    # The whole blob takes about 8 s from the upstream: the kill lands mid-blob.
    throttled.rate = size / 8
    fleet = make_fleet(upstream_url=throttled.url)
    mark = fleet_upstream.registry.mark()

    starter = BlobReader(fleet[0], "fleet/big", digest)
    starter.start()
    holders: list[str] = []

    def leased() -> bool:
        holder = fleet.backends.lease_holder(f"blob:{digest}")
        holders.extend([holder] if holder else [])
        return bool(holders)

    wait_until(leased, f"a replica to hold the lease blob:{digest}")
    owner = fleet.named(holders[0])
    survivors = [r for r in fleet if r is not owner]
    readers = [BlobReader(r, "fleet/big", digest) for r in survivors]
    for reader in readers:
        reader.start()
    pulls: list[list[skopeo.PulledImage]] = []
    puller = _thread(lambda: pulls.append(pull_all([(r, BIG) for r in survivors * 2], tmp_path)))
    wait_until(lambda: all(reader.received > MIB for reader in readers), "followers to get bytes")
    assert not any(send.finished for send in throttled.blob_sends(digest)), "not mid-blob"

    killed_at = time.monotonic()
    owner.kill()
    for reader in readers:
        reader.join(120)
    puller.join(180)

    for reader in readers:
        assert (reader.error, reader.status, reader.digest) == (None, 200, digest)
    assert len(pulls) == 1, "the survivors' skopeo pulls failed (see the log above)"
    for one in pulls[0]:
        check_image(one, image)
    # One full GET; a takeover resumes with a Range GET from the bytes it already has.
    assert blob_gets(fleet_upstream, digest, mark, status=200) == 1
    assert blob_gets(fleet_upstream, digest, mark) == blob_gets(
        fleet_upstream, digest, mark, status=200
    ) + blob_gets(fleet_upstream, digest, mark, status=206)
    assert fleet.metric("regcache_lease_takeovers") == 1
    resumed = [
        s.first_byte
        for s in throttled.blob_sends(digest)
        if s.started > killed_at and s.first_byte is not None
    ]
    assert resumed, "no upstream bytes flowed after the kill"
    print(
        f"takeover: SIGKILL -> upstream bytes flowing again {min(resumed) - killed_at:.2f} s; "
        f"longest stall seen by a follower's client "
        f"{max(reader.longest_gap for reader in readers):.2f} s"
    )


def test_a_replica_on_an_empty_disk_serves_the_warm_image_without_the_upstream(
    fleet_upstream: FleetUpstream, make_fleet: FleetFactory, tmp_path: Path
) -> None:
    image = fleet_upstream.images[ONE]
    fleet = make_fleet()
    check_image(skopeo.pull(fleet[0].ref("fleet/one", "1"), tmp_path / "first"), image)
    wait_stored(fleet, image)

    fleet.restart_on_empty_disk(fleet[0])
    mark = fleet_upstream.registry.mark()
    for i, replica in enumerate(fleet):
        check_image(skopeo.pull(replica.ref("fleet/one", "1"), tmp_path / f"warm{i}"), image)

    assert fleet_upstream.registry.requests(since=mark) == []


def _thread(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread
