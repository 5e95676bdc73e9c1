"""``regcache warm`` and ``regcache unpin`` against the fake registry: the command's own code
run in the test's event loop on a cache directory, then that directory served by regcache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.commands.unpin import unpin_images
from proxy.commands.warm import WarmOptions, plan_image, warm_images
from proxy.config import Config
from proxy.model import TagKey
from proxy.oci.contents import Platform
from proxy.routing import Router
from proxy.store.diskindex import DiskIndex
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, digest_of
from tests.support.inproxy import make_config

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SKOPEO_ACCEPT = {
    "Accept": f"{OCI_INDEX}, {OCI_MANIFEST}, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
}


def push_index(registry: FakeRegistry, repository: str, tag: str) -> dict[str, FakeImage]:
    """``repository:tag``, an OCI index of a linux/amd64 and a linux/arm64 image."""
    images = {
        arch: registry.push_image(repository, f"{tag}-{arch}", (32 * KIB, 48 * KIB), seed=i)
        for i, arch in enumerate(("amd64", "arm64"))
    }
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
            for arch, image in images.items()
        ],
    }
    registry.add_manifest(repository, json.dumps(index).encode(), OCI_INDEX, tag)
    return images


def options(**changes: Any) -> WarmOptions:
    settings: dict[str, Any] = {
        "platforms": (),
        "concurrency": 4,
        "pin": False,
        "server": None,
        "as_json": True,
    }
    settings.update(changes)
    return WarmOptions(**settings)


async def warm(config: Config, *texts: str, **changes: Any) -> int:
    opts = options(**changes)
    router = Router(config)
    images = [plan_image(text, router, opts.server is not None) for text in texts]
    return await warm_images(config, images, opts)


def summary(capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], str]:
    out, err = capsys.readouterr()
    return json.loads(out), err


@pytest.fixture
def config(tmp_path: Path, registry: FakeRegistry) -> Config:
    return make_config(tmp_path / "cache", registry.url)


def blobs_of(image: FakeImage) -> list[str]:
    return [digest_of(image.config), *image.layer_digests]


async def test_a_multi_platform_image_is_warmed_whole_and_served_offline(
    config: Config,
    registry: FakeRegistry,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = push_index(registry, "library/multi", "1.0")
    assert await warm(config, "docker.io/multi:1.0") == 0
    [row], _ = summary(capsys)
    assert row["image"] == "docker.io/library/multi:1.0"
    assert row["platforms"] == ["linux/amd64", "linux/arm64"]
    assert row["blobs"] == 6
    assert row["present"] == 0
    assert row["error"] is None

    offline = await make_proxy(cache_dir=config.cache_dir, offline=True)
    answer = await offline.get("/v2/library/multi/manifests/1.0", SKOPEO_ACCEPT)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == OCI_INDEX
    for image in images.values():
        manifest = await offline.get(f"/v2/library/multi/manifests/{image.digest}", SKOPEO_ACCEPT)
        assert manifest.body == image.manifest
        for digest in blobs_of(image):
            assert (await offline.get(blob_path(digest, "library/multi"))).status == 200


async def test_the_tag_is_recorded_for_any_client(config: Config, registry: FakeRegistry) -> None:
    image = registry.push_image("library/app", "1.0")
    assert await warm(config, "docker.io/library/app:1.0") == 0
    index = DiskIndex(config.cache_dir / "index")
    entry = await index.get_tag(TagKey("docker.io", "library/app", "1.0", ("*",)))
    await index.close()
    assert entry is not None
    assert str(entry.digest) == image.digest


async def test_only_the_chosen_platforms_are_fetched(
    config: Config, registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    images = push_index(registry, "library/multi", "1.0")
    arm = (Platform.parse("linux/arm64"),)
    assert await warm(config, "docker.io/library/multi:1.0", platforms=arm) == 0
    [row], _ = summary(capsys)
    assert row["platforms"] == ["linux/arm64"]
    assert row["blobs"] == 3
    for digest in blobs_of(images["amd64"]):
        assert registry.count("GET", blob_path(digest, "library/multi")) == 0
    for digest in blobs_of(images["arm64"]):
        assert registry.count("GET", blob_path(digest, "library/multi")) == 1


async def test_a_platform_the_index_lacks_fails_the_image(
    config: Config, registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    push_index(registry, "library/multi", "1.0")
    s390x = (Platform.parse("linux/s390x"),)
    assert await warm(config, "docker.io/library/multi:1.0", platforms=s390x) == 1
    [row], err = summary(capsys)
    assert row["error"] == "no manifest for linux/s390x (the index has: linux/amd64, linux/arm64)"
    assert "warm docker.io/library/multi:1.0 failed: no manifest for linux/s390x" in err


async def test_a_second_warm_fetches_nothing_and_says_what_was_there(
    config: Config, registry: FakeRegistry, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await warm(config, "docker.io/library/app:1.0") == 0
    [first], _ = summary(capsys)
    gets = len(registry.seen)
    assert await warm(config, "docker.io/library/app:1.0") == 0
    [second], _ = summary(capsys)
    whole = len(image.manifest) + len(image.config) + sum(map(len, image.layers))
    assert (first["fetched"], first["present"]) == (whole, 0)
    assert (second["fetched"], second["present"]) == (0, whole)
    assert [s.method for s in registry.seen[gets:]] == []  # the tag is still fresh


async def test_a_failed_image_is_named_with_the_reason_and_the_rest_are_warmed(
    config: Config, registry: FakeRegistry, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    status = await warm(config, "docker.io/library/app:1.0", "docker.io/library/gone:1")
    rows, err = summary(capsys)
    assert status == 1
    assert [row["error"] for row in rows] == [
        None,
        "MANIFEST_UNKNOWN: fake registry says MANIFEST_UNKNOWN",
    ]
    assert "warm docker.io/library/gone:1 failed: MANIFEST_UNKNOWN: fake registry says" in err
    assert "warm docker.io/library/app:1.0: done" in err


async def test_a_blob_the_upstream_lost_fails_the_image(
    config: Config, registry: FakeRegistry, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    del registry.blobs[image.layer_digests[1]]
    assert await warm(config, "docker.io/library/app:1.0") == 1
    [row], _ = summary(capsys)
    assert row["error"].startswith("BLOB_UNKNOWN")


async def test_progress_without_a_terminal_is_plain_lines(
    config: Config, registry: FakeRegistry, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await warm(config, "docker.io/library/app:1.0", as_json=False) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == "warm docker.io/library/app:1.0: started"
    assert lines[1].startswith("warm docker.io/library/app:1.0: done, 364.")
    assert lines[1].endswith("; 3 blobs, 364.7 KiB fetched, 0 B already present")
    assert "\x1b" not in err + out
    assert "total: 1 images" in out
    assert "docker.io/library/app:1.0" in out


async def test_shared_blobs_are_fetched_once(
    config: Config, registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    images = push_index(registry, "library/multi", "1.0")
    texts = ("docker.io/library/multi:1.0", "docker.io/library/multi:1.0-amd64")
    assert await warm(config, *texts, concurrency=1) == 0
    rows, _ = summary(capsys)
    assert [row["blobs"] for row in rows] == [6, 3]
    for digest in blobs_of(images["amd64"]):
        assert registry.count("GET", blob_path(digest, "library/multi")) == 1


async def test_through_a_running_regcache(
    config: Config,
    registry: FakeRegistry,
    image: FakeImage,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    regcache = await make_proxy()
    assert await warm(config, "docker.io/library/app:1.0", server=regcache.url) == 0
    [first], _ = summary(capsys)
    assert await warm(config, "docker.io/library/app:1.0", server=regcache.url) == 0
    [second], _ = summary(capsys)
    assert first["present"] == 0
    assert second["fetched"] == 0
    assert second["present"] == first["fetched"]
    assert not (config.cache_dir / "blobs").exists()  # the server's cache, not this one
    for digest in image.layer_digests:
        assert registry.count("GET", blob_path(digest)) == 1
        assert (await regcache.get(blob_path(digest))).headers["X-Cache"] == "HIT"


async def test_through_a_running_regcache_errors_are_the_servers(
    config: Config,
    registry: FakeRegistry,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    regcache = await make_proxy()
    assert await warm(config, "elsewhere.io/app:1", server=regcache.url) == 1
    [row], _ = summary(capsys)
    assert row["image"] == "elsewhere.io/app:1"
    assert row["error"].startswith("NAME_UNKNOWN: no upstream is configured for namespace")


async def test_a_pin_keeps_an_image_through_eviction_until_unpinned(
    config: Config,
    registry: FakeRegistry,
    image: FakeImage,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server serves the image first (so it is in its LRU order), then another process
    # pins it: the server's next eviction pass must see the pin.
    regcache = await make_proxy(cache_dir=config.cache_dir, cache_max_size=400 * KIB)
    for digest in image.layer_digests:
        assert (await regcache.get(blob_path(digest))).status == 200
    assert await warm(config, "docker.io/library/app:1.0", pin=True) == 0
    others = registry.push_image("library/other", "1", layer_sizes=(20 * KIB, 30 * KIB, 30 * KIB))

    async def fetch_other(i: int) -> None:
        path = blob_path(others.layer_digests[i], "library/other")
        assert (await regcache.get(path)).status == 200

    await fetch_other(0)
    await fetch_other(1)  # over the bound: the oldest is the app's first layer, but pinned
    await regcache.settled("regcache_evictions_total", 1, kind="blob")
    assert await regcache.metric("regcache_evicted_bytes_total") == 20 * KIB

    assert await unpin_images(config, ["docker.io/library/app:1.0"]) == 0
    await fetch_other(2)
    await regcache.settled("regcache_evicted_bytes_total", 20 * KIB + len(image.layers[0]))


async def test_unpin_of_an_image_not_pinned_fails(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await unpin_images(config, ["docker.io/library/app:1.0"]) == 1
    assert "unpin docker.io/library/app:1.0: not pinned" in capsys.readouterr().err


async def test_an_image_by_digest_is_warmed_and_pinned_under_that_name(
    config: Config, registry: FakeRegistry, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"docker.io/library/app@{image.digest}"
    assert await warm(config, name, pin=True) == 0
    [row], _ = summary(capsys)
    assert row["digest"] == image.digest
    index = DiskIndex(config.cache_dir / "index")
    pins = await index.pins()
    await index.close()
    assert {str(digest) for digest in pins[name]} == {image.digest, *blobs_of(image)}
