"""``regcache ls``, ``rm`` and ``prune`` on a cache a regcache filled through its API, each
command awaited in-process on the same cache directory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

import pytest

from proxy.commands.listing import list_images
from proxy.commands.removal import prune_images, remove_images
from proxy.config import Config
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex
from tests.fast.conftest import KIB, ProxyFactory, blob_path
from tests.support.fakeregistry import OCI_INDEX, OCI_MANIFEST, FakeImage, FakeRegistry, digest_of
from tests.support.inproxy import InProcessRegcache

ACCEPT = {"Accept": OCI_MANIFEST}
DAY = 86400.0


def blobs_of(image: FakeImage) -> list[tuple[str, bytes]]:
    contents = (image.config, *image.layers)
    return [(digest_of(data), data) for data in contents]


async def pull(regcache: InProcessRegcache, image: FakeImage, accept: str = OCI_MANIFEST) -> None:
    path = f"/v2/{image.repository}/manifests/{image.tag}"
    answer = await regcache.get(path, {"Accept": accept})
    assert (answer.status, answer.body) == (200, image.manifest)
    for digest, data in blobs_of(image):
        assert (await regcache.get(blob_path(digest, image.repository))).body == data


def on_base_of(registry: FakeRegistry, base: FakeImage, repository: str, tag: str) -> FakeImage:
    """An image in ``repository`` whose first layer is ``base``'s, as images built FROM one
    base image share it."""
    own = registry.push_image(repository, tag, layer_sizes=(8 * KIB, 4 * KIB), seed=1)
    registry.add_blob(base.layers[0], repository)
    body = own.manifest.replace(
        digest_of(own.layers[0]).encode(), digest_of(base.layers[0]).encode()
    )
    registry.add_manifest(repository, body, OCI_MANIFEST, tag)
    return FakeImage(
        repository, tag, body, OCI_MANIFEST, own.config, (base.layers[0], own.layers[1])
    )


def cached_blobs(config: Config) -> set[str]:
    files = (config.cache_dir / "blobs").rglob("*")
    return {f"sha256:{path.name}" for path in files if path.is_file()}


async def as_json(
    capsys: pytest.CaptureFixture[str], work: Coroutine[Any, Any, int]
) -> tuple[int, Any]:
    capsys.readouterr()
    status = await work
    return status, json.loads(capsys.readouterr().out)


@pytest.fixture
async def two(registry: FakeRegistry) -> tuple[FakeImage, FakeImage]:
    app = registry.push_image("library/app", "1.0", layer_sizes=(64 * KIB, 8 * KIB))
    return app, on_base_of(registry, app, "library/other", "2.0")


async def filled(make_proxy: ProxyFactory, *images: FakeImage) -> InProcessRegcache:
    """A regcache that pulled the images and was stopped, its usage records written."""
    regcache = await make_proxy()
    for image in images:
        await pull(regcache, image)
    await regcache.stop()
    return regcache


async def test_ls_lists_one_row_per_tag_whatever_the_accept_lists(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    app, other = two
    regcache = await make_proxy()
    await pull(regcache, app)
    await pull(regcache, app, accept=f"{OCI_MANIFEST}, application/json")  # another TagKey
    await pull(regcache, other)
    await regcache.stop()
    status, rows = await as_json(capsys, list_images(regcache.config, as_json=True))
    assert status == 0
    assert [(row["repository"], row["tag"]) for row in rows] == [
        ("library/app", "1.0"),
        ("library/other", "2.0"),
    ]
    first = rows[0]
    # The JSON keys are a contract scripts rely on.
    keys = "upstream repository tag digest platforms size last_served pinned"
    assert list(first) == keys.split(" ")
    assert first["upstream"] == "docker.io"
    assert first["digest"] == app.digest
    assert first["platforms"] == ["linux/amd64"]
    assert first["size"] == len(app.manifest) + sum(len(data) for _, data in blobs_of(app))
    assert first["last_served"].endswith("Z")
    assert first["pinned"] is False
    assert await list_images(regcache.config, as_json=False) == 0
    table = capsys.readouterr().out
    assert "cached images" in table
    assert "KiB" in table


async def test_ls_names_the_platforms_of_an_index(
    make_proxy: ProxyFactory, registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.push_index("library/multi", "1", ["linux/arm64", "linux/amd64"])
    regcache = await make_proxy()
    answer = await regcache.get("/v2/library/multi/manifests/1", {"Accept": OCI_INDEX})
    assert answer.status == 200
    await regcache.stop()
    _, rows = await as_json(capsys, list_images(regcache.config, as_json=True))
    [row] = rows
    assert row["platforms"] == ["linux/amd64", "linux/arm64"]
    assert row["size"] == len(answer.body)  # only the index is cached


async def test_rm_keeps_the_layers_another_image_shares(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    app, other = two
    regcache = await filled(make_proxy, app, other)
    config = regcache.config
    status, removed = await as_json(
        capsys, remove_images(config, ["docker.io/app:1.0"], as_json=True)
    )
    assert status == 0
    shared = digest_of(app.layers[0])
    own = {digest for digest, _ in blobs_of(app)} - {shared}
    assert {(row["kind"], row["name"]) for row in removed} == {
        ("image", "docker.io/library/app:1.0"),
        ("manifest", app.digest),
        *(("blob", digest) for digest in own),
    }
    assert not own & cached_blobs(config)
    assert shared in cached_blobs(config)
    _, rows = await as_json(capsys, list_images(config, as_json=True))
    assert [row["repository"] for row in rows] == ["library/other"]
    # What is left is whole: other still pulls from the cache alone.
    await regcache.restart(offline=True)
    await pull(regcache, other)


async def test_rm_of_what_is_not_cached_fails_naming_it(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    regcache = await filled(make_proxy, two[0])
    status = await remove_images(
        regcache.config, ["docker.io/app:9.9", "nowhere.io/x:1"], as_json=False
    )
    assert status == 1
    errors = capsys.readouterr().err
    assert "docker.io/library/app:9.9: not in the cache" in errors
    assert "no upstream is named 'nowhere.io'" in errors


async def test_rm_by_digest_removes_the_tags_pointing_at_it(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    app, other = two
    regcache = await filled(make_proxy, app, other)
    status = await remove_images(
        regcache.config, [f"docker.io/library/app@{app.digest}"], as_json=False
    )
    assert status == 0
    assert "removed 1 images, 1 manifests, 2 blobs" in capsys.readouterr().out
    _, rows = await as_json(capsys, list_images(regcache.config, as_json=True))
    assert [row["tag"] for row in rows] == ["2.0"]


async def test_pinned_content_survives_rm_and_prune(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    app, other = two
    regcache = await filled(make_proxy, app, other)
    config = regcache.config
    contents = frozenset(Digest.parse(d) for d in [app.digest, *(d for d, _ in blobs_of(app))])
    index = DiskIndex(config.cache_dir / "index")
    await index.put_pin("docker.io/library/app:1.0", contents)
    await index.close()
    before = cached_blobs(config)
    assert await remove_images(config, ["docker.io/library/app:1.0"], as_json=False) == 1
    assert "pinned" in capsys.readouterr().err
    assert cached_blobs(config) == before
    await asyncio.sleep(0.05)
    status, removed = await as_json(capsys, prune_images(config, 0.01, dry_run=False, as_json=True))
    assert status == 0
    assert ("image", "docker.io/library/other:2.0") in {(r["kind"], r["name"]) for r in removed}
    assert {d for d, _ in blobs_of(app)} <= cached_blobs(config)
    _, rows = await as_json(capsys, list_images(config, as_json=True))
    assert [(row["tag"], row["pinned"]) for row in rows] == [("1.0", True)]


async def test_prune_goes_by_last_use_and_a_dry_run_frees_nothing(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    two: tuple[FakeImage, FakeImage],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, other = two
    regcache = await make_proxy()
    await pull(regcache, app)
    await asyncio.sleep(0.3)
    await pull(regcache, other)
    await regcache.stop()
    config = regcache.config
    _, nothing = await as_json(capsys, prune_images(config, 30 * DAY, dry_run=False, as_json=True))
    assert nothing == []
    before = cached_blobs(config)
    status, planned = await as_json(capsys, prune_images(config, 0.2, dry_run=True, as_json=True))
    assert status == 0
    assert cached_blobs(config) == before
    _, removed = await as_json(capsys, prune_images(config, 0.2, dry_run=False, as_json=True))
    assert removed == planned
    names = {row["name"] for row in removed if row["kind"] == "image"}
    assert names == {"docker.io/library/app:1.0"}
    assert digest_of(app.layers[0]) in cached_blobs(config)  # other's base layer too
    assert digest_of(app.layers[1]) not in cached_blobs(config)


async def test_a_running_server_fetches_again_what_rm_removed(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], registry: FakeRegistry
) -> None:
    app, _ = two
    regcache = await make_proxy()
    await pull(regcache, app)
    assert await remove_images(regcache.config, ["docker.io/library/app:1.0"], as_json=False) == 0
    assert not cached_blobs(regcache.config)
    fetched = registry.count("GET", blob_path(digest_of(app.layers[0])))
    await pull(regcache, app)
    assert registry.count("GET", blob_path(digest_of(app.layers[0]))) == fetched + 1


async def test_a_tag_only_answered_to_a_head_is_not_listed(
    make_proxy: ProxyFactory, two: tuple[FakeImage, FakeImage], capsys: pytest.CaptureFixture[str]
) -> None:
    regcache = await make_proxy()
    assert (await regcache.head("/v2/library/app/manifests/1.0", ACCEPT)).status == 200
    await regcache.stop()
    index = DiskIndex(regcache.config.cache_dir / "index")
    assert [key.tag async for key, _ in index.tags()] == ["1.0", "1.0"]  # its Accept list's, any
    await index.close()
    assert await as_json(capsys, list_images(regcache.config, as_json=True)) == (0, [])
