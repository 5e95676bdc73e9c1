"""Incremental bundles in one process: an inventory of the far side's cache, an export that
carries only what it lacks, and an import that refuses to tag what neither has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fast.conftest import ProxyFactory
from tests.support.bundlefiles import IMAGE, Run, entries, read, tags_of
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, digest_of


async def test_an_incremental_bundle_carries_only_what_the_far_side_lacks(
    cli: Run,
    tmp_path: Path,
    registry: FakeRegistry,
    image: FakeImage,
    bundle: Path,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    far = tmp_path / "far"
    assert await cli("import", str(bundle), cache=far) == 0
    have = tmp_path / "have.json"
    capsys.readouterr()
    assert await cli("inventory", "-o", str(have), "--json", cache=far) == 0
    assert json.loads(capsys.readouterr().out)[0]["blobs"] == 3
    document = json.loads(read(have))
    assert document["format"] == "regcache-inventory"
    assert document["version"] == 1
    assert {"image": IMAGE, "digest": image.digest} in document["tags"]

    # 2.0 shares the base layer and the config... of 1.0 and brings one new layer.
    new_layer = b"new layer" * 1000
    layers = [
        json.loads(image.manifest)["layers"][0],
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": registry.add_blob(new_layer, "library/app"),
            "size": len(new_layer),
        },
    ]
    manifest = json.loads(image.manifest) | {"layers": layers}
    body = json.dumps(manifest).encode()
    registry.add_manifest("library/app", body, OCI_MANIFEST, "2.0")

    update = tmp_path / "update.tar"
    near = tmp_path / "a"
    argv = ("docker.io/library/app:2.0", IMAGE, "--fetch", "--have", str(have), "-o", str(update))
    assert await cli("export", *argv, cache=near) == 0
    carried = {name for name in entries(update) if name.startswith("blobs/")}
    assert carried == {
        f"blobs/sha256/{digest_of(new_layer)[7:]}",
        f"blobs/sha256/{digest_of(body)[7:]}",
    }
    assert len(json.loads(entries(update)["index.json"])["manifests"]) == 2

    assert await cli("import", str(update), cache=far) == 0
    assert (await tags_of(far))["library/app:2.0"] == digest_of(body)
    offline = await make_proxy(cache_dir=far, offline=True)
    for digest in (digest_of(new_layer), image.layer_digests[0]):
        assert (await offline.get(f"/v2/library/app/blobs/{digest}")).status == 200


async def test_an_incremental_bundle_without_its_base_writes_no_tag(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    have = tmp_path / "have.json"
    assert await cli("inventory", "-o", str(have), cache=tmp_path / "a") == 0
    update = tmp_path / "update.tar"
    assert (
        await cli("export", IMAGE, "--have", str(have), "-o", str(update), cache=tmp_path / "a")
        == 0
    )
    assert [n for n in entries(update) if n.startswith("blobs/")] == []

    fresh = tmp_path / "b"
    assert await cli("import", str(update), cache=fresh) == 1
    assert (
        f"{IMAGE}: the bundle and the cache lack manifest {image.digest}" in capsys.readouterr().err
    )
    assert await tags_of(fresh) == {}
