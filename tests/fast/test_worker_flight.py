"""Single flight across the worker processes of one server (proxy.cache.localdownloads),
with two regcaches in this process on one cache directory standing in for two workers:
their lock files are opened separately, and flock locks of separate opens conflict as
those of two processes do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from proxy.cache.lockfiles import LockFile, Published
from proxy.cache.transfer import WRITE_BATCH
from proxy.config.prefetch import PrefetchRule
from proxy.oci.digest import Digest
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache

SIZE = 2048 * KIB
DIGEST = Digest.parse("sha256:" + "ab" * 32)
OTHER = Digest.parse("sha256:" + "cd" * 32)
SAME_SLOT = Digest.parse("sha256:" + "0" * 15 + DIGEST.hex[15:19] + "1" * 45)  # its own lock
HELD = WRITE_BATCH + WRITE_BATCH // 2


def held(digest: str, after: int, release: asyncio.Event) -> Fault:
    """The first download of ``digest`` goes silent after ``after`` bytes until released."""
    return Fault(
        path=blob_path(digest, "library/big"),
        method="GET",
        stall=(after, 30.0),
        release=release,
        times=1,
    )


def big_layer(registry: FakeRegistry) -> tuple[str, bytes, str]:
    """A 2 MiB layer's digest, bytes and blob path."""
    image = registry.push_image("library/big", "1", layer_sizes=(SIZE,))
    digest = image.layer_digests[0]
    return digest, image.layers[0], blob_path(digest, "library/big")


async def two_workers(make_proxy: ProxyFactory, tmp_path: Path) -> list[InProcessRegcache]:
    cache = tmp_path / "shared"
    # Patient with a silent upstream: the owner does not resume by itself before it stops.
    return [await make_proxy(cache_dir=cache, workers=2, read_timeout=60) for _ in range(2)]


async def fetch(regcache: InProcessRegcache, digest: str) -> bytes:
    async with regcache.client.get(blob_path(digest, "library/big")) as response:
        assert response.status == 200
        return await response.read()


def test_a_digests_lock_is_held_by_one_open_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    first, second = LockFile(path, DIGEST), LockFile(path, DIGEST)
    other = LockFile(path, OTHER)
    assert first.try_own()
    assert not second.try_own()
    assert other.try_own()  # another digest's lock is another lock
    first.publish(tmp_path / "spool", 123)
    published = second.published()
    assert published is not None
    assert (published.path, published.size) == (tmp_path / "spool", 123)
    assert other.published() is None
    first.close(stored=True)  # clears its publication and lets go
    assert second.try_own()
    assert second.empty
    assert second.published() is None
    second.close(stored=False)
    other.close(stored=False)


def test_digests_sharing_a_slot_never_read_each_others_publication(tmp_path: Path) -> None:
    """Slots are fewer than digests: one taken by another digest's download is as empty."""
    path = tmp_path / "lock"
    mine, theirs = LockFile(path, DIGEST), LockFile(path, SAME_SLOT)
    assert mine.try_own()
    assert theirs.try_own()
    mine.publish(tmp_path / "mine", 1)
    theirs.publish(tmp_path / "theirs", 2)
    assert mine.published() is None
    mine.clear()  # leaves the other digest's publication alone
    assert theirs.published() == Published(tmp_path / "theirs", 2)
    theirs.mark_invalid()
    assert theirs.invalid()
    assert not mine.invalid()
    mine.close(stored=True)
    theirs.close(stored=False)
    again = LockFile(path, SAME_SLOT)
    assert again.try_own()
    assert not again.empty
    assert again.invalid()  # a failed owner's word outlives it
    again.close(stored=True)


async def test_workers_on_one_cache_fetch_a_cold_blob_once(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    digest, layer, _ = big_layer(registry)
    release = asyncio.Event()
    registry.faults.append(held(digest, 256 * KIB, release))
    workers = await two_workers(make_proxy, tmp_path)

    gets = [asyncio.create_task(fetch(workers[i % 2], digest)) for i in range(8)]
    await asyncio.sleep(0.3)  # every request is under way, the owner's upstream silent
    release.set()

    assert await asyncio.gather(*gets) == [layer] * 8
    assert registry.count("GET", blob_path(digest, "library/big")) == 1
    joins = [await w.metric("regcache_dedup_joins_total", kind="blob") for w in workers]
    assert min(joins) >= 1  # the follower joined across processes, the owner in its own
    # Nothing is left per blob: no file, and no publication in the shared lock file.
    assert not (tmp_path / "shared" / ".locks" / "downloads").exists()
    assert not (tmp_path / "shared" / ".locks" / "downloads.lock").read_bytes().strip(b"\0")


async def test_a_follower_takes_over_from_an_owner_that_stops_mid_blob(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    digest, layer, _ = big_layer(registry)
    # The owner writes its file a batch at a time: stalled half a batch past the first, its
    # file holds at least that batch, and the follower resumes from its end.
    registry.faults.append(held(digest, HELD, asyncio.Event()))
    owner, follower = await two_workers(make_proxy, tmp_path)
    mine = asyncio.create_task(fetch(owner, digest))
    await asyncio.sleep(0.2)
    theirs = [asyncio.create_task(fetch(follower, digest)) for _ in range(3)]
    await asyncio.sleep(0.3)  # the follower follows the owner's file, stalled

    await owner.stop()  # its download ends unfinished and lets go of the lock, as at a death

    assert await asyncio.gather(*theirs) == [layer] * 3
    mine.cancel()  # its regcache is gone
    await asyncio.gather(mine, return_exceptions=True)
    assert registry.count("GET", blob_path(digest, "library/big")) == 2
    # From the end of the owner's last written batch: where depends on the chunks' sizes.
    [resumed] = registry.ranges()
    assert WRITE_BATCH <= int(resumed.removeprefix("bytes=").removesuffix("-")) <= HELD
    assert await follower.metric("regcache_lease_takeovers_total") == 1
    # Stored once, by the follower: a later request is a hit.
    again = await fetch(follower, digest)
    assert again == layer
    assert registry.count("GET", blob_path(digest, "library/big")) == 2


async def test_a_blob_without_a_length_is_fetched_again_from_the_start(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    digest, layer, path = big_layer(registry)
    registry.faults.append(
        Fault(path=path, method="GET", stall=(512 * KIB, 30.0), chunked=True, times=1)
    )
    owner, follower = await two_workers(make_proxy, tmp_path)
    mine = asyncio.create_task(fetch(owner, digest))
    await asyncio.sleep(0.2)
    theirs = asyncio.create_task(fetch(follower, digest))
    await asyncio.sleep(0.3)

    await owner.stop()

    assert await theirs == layer
    mine.cancel()  # its regcache is gone
    await asyncio.gather(mine, return_exceptions=True)
    assert registry.ranges() == []
    assert registry.count("GET", path) == 2


async def test_a_request_after_the_owner_stored_the_blob_reads_it(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, tmp_path: Path
) -> None:
    first, second = await two_workers(make_proxy, tmp_path)
    digest = image.layer_digests[1]
    async with aiohttp.ClientSession() as session:
        for worker in (first, second):
            async with session.get(worker.url + blob_path(digest)) as response:
                assert await response.read() == image.layers[1]
    assert registry.count("GET", blob_path(digest)) == 1


async def test_one_worker_runs_each_prefetch(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage, tmp_path: Path
) -> None:
    rule = {"prefetch": (PrefetchRule(("docker.io/app:1.0",), 1.0, ()),)}
    cache = tmp_path / "shared"
    workers = [await make_proxy(cache_dir=cache, workers=2, **rule) for _ in range(2)]

    results = []
    for _ in range(250):
        results = [(await w.get("/status.json")).json()["prefetch"][0]["result"] for w in workers]
        if None not in results:
            break
        await asyncio.sleep(0.02)
    assert sorted(results) == ["elsewhere", "ok"]
    assert registry.count("GET", "/v2/library/app/manifests/1.0") == 1


async def test_followers_fail_with_an_owner_whose_bytes_fail_the_digest(
    make_proxy: ProxyFactory, registry: FakeRegistry, tmp_path: Path
) -> None:
    digest, layer, path = big_layer(registry)
    release = asyncio.Event()
    registry.faults.append(
        Fault(path=path, method="GET", stall=(512 * KIB, 30.0), release=release, wrong_body=True)
    )
    owner, follower = await two_workers(make_proxy, tmp_path)
    theirs = [asyncio.create_task(body(w, digest)) for w in (owner, follower, follower)]
    await asyncio.sleep(0.3)  # the follower sent its clients the owner's (wrong) first bytes
    release.set()

    # Closed short, every one: none gets a whole body made of the wrong start and a good end.
    for got in await asyncio.gather(*theirs):
        assert got is None or len(got) < len(layer)
    assert registry.count("GET", path) == 1
    registry.faults.clear()
    assert await fetch(follower, digest) == layer


async def body(regcache: InProcessRegcache, digest: str) -> bytes | None:
    """The body as far as it came, None when the connection broke."""
    try:
        async with regcache.client.get(blob_path(digest, "library/big")) as response:
            return await response.read()
    except aiohttp.ClientPayloadError:
        return None
