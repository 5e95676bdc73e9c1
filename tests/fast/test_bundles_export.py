"""Bundle export in one process: from a cache the fake registry filled, the archive as other
tools read it, imported into another cache and served by an offline regcache; what export
refuses, and --all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.oci.layout import CONTAINERD_NAME, REF_NAME
from tests.fast.conftest import KIB, ProxyFactory
from tests.support.bundlefiles import IMAGE, Run, entries, tags_of
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, digest_of

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def leftovers(directory: Path) -> list[Path]:
    """Bundles, whole or partial, in ``directory``."""
    return [*directory.glob("bundle.tar"), *directory.glob(".bundle.tar.*")]


async def test_export_fetches_writes_an_oci_layout_and_import_serves_it_offline(
    cli: Run,
    tmp_path: Path,
    image: FakeImage,
    make_proxy: ProxyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = tmp_path / "bundle.tar"
    assert (
        await cli("export", IMAGE, "--fetch", "-o", str(bundle), "--json", cache=tmp_path / "a")
        == 0
    )
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["images"] == 1
    assert summary["blobs"] == 3
    assert summary["manifests"] == 1

    files = entries(bundle)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (descriptor,) = json.loads(files["index.json"])["manifests"]
    assert descriptor["annotations"] == {CONTAINERD_NAME: IMAGE, REF_NAME: IMAGE}
    assert descriptor["digest"] == image.digest
    assert descriptor["mediaType"] == OCI_MANIFEST
    for blob in (image.manifest, image.config, *image.layers):
        assert files[f"blobs/sha256/{digest_of(blob)[7:]}"] == blob
    assert list(files)[-1] == "index.json"
    assert leftovers(tmp_path) == [bundle]

    fresh = tmp_path / "b"
    assert await cli("import", str(bundle), cache=fresh) == 0
    assert (await tags_of(fresh))["library/app:1.0"] == image.digest
    capsys.readouterr()
    assert await cli("import", str(bundle), "--json", cache=fresh) == 0
    again = json.loads(capsys.readouterr().out)[0]
    assert again["blobs"] == 0
    assert again["skipped"] == sum(len(blob) for blob in (image.config, *image.layers))
    offline = await make_proxy(cache_dir=fresh, offline=True)
    manifest = await offline.get("/v2/library/app/manifests/1.0", {"Accept": OCI_MANIFEST})
    assert manifest.status == 200
    assert manifest.body == image.manifest
    for layer in image.layers:
        answer = await offline.get(f"/v2/library/app/blobs/{digest_of(layer)}")
        assert answer.status == 200
        assert answer.body == layer


async def test_an_image_not_in_the_cache_is_an_error_and_no_bundle_is_written(
    cli: Run, tmp_path: Path, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    assert await cli("export", IMAGE, "-o", str(bundle), cache=tmp_path / "a") == 1
    assert f"{IMAGE}: not in the cache" in capsys.readouterr().err
    assert not leftovers(tmp_path)


async def test_a_blob_missing_from_the_cache_is_named(
    cli: Run, tmp_path: Path, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "a"
    assert await cli("export", IMAGE, "--fetch", "-o", str(tmp_path / "x.tar"), cache=cache) == 0
    layer = image.layer_digests[1]
    next((cache / "blobs").rglob(layer[7:])).unlink()
    assert await cli("export", IMAGE, "-o", str(tmp_path / "y.tar"), cache=cache) == 1
    assert f"missing blob {layer}" in capsys.readouterr().err


def push_multi_platform(registry: FakeRegistry) -> tuple[str, FakeImage, FakeImage]:
    amd64 = registry.push_image("library/multi", "amd64", layer_sizes=(8 * KIB,), seed=1)
    arm64 = registry.push_image("library/multi", "arm64", layer_sizes=(8 * KIB,), seed=2)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": child.digest,
                "size": len(child.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
            for child, arch in ((amd64, "amd64"), (arm64, "arm64"))
        ],
    }
    body = json.dumps(index).encode()
    registry.add_manifest("library/multi", body, OCI_INDEX, "1")
    return digest_of(body), amd64, arm64


async def test_an_index_goes_with_the_platforms_cached_and_is_served_for_them(
    cli: Run, tmp_path: Path, registry: FakeRegistry, make_proxy: ProxyFactory
) -> None:
    index_digest, amd64, arm64 = push_multi_platform(registry)
    online = await make_proxy(cache_dir=tmp_path / "a")
    assert (await online.get("/v2/library/multi/manifests/1", {"Accept": OCI_INDEX})).status == 200
    assert (await online.get(f"/v2/library/multi/manifests/{amd64.digest}")).status == 200
    for blob in (amd64.config, *amd64.layers):
        assert (await online.get(f"/v2/library/multi/blobs/{digest_of(blob)}")).status == 200
    await online.stop()

    bundle = tmp_path / "multi.tar"
    assert await cli("export", "docker.io/multi:1", "-o", str(bundle), cache=tmp_path / "a") == 0
    files = entries(bundle)
    assert f"blobs/sha256/{index_digest[7:]}" in files
    assert f"blobs/sha256/{amd64.digest[7:]}" in files
    assert f"blobs/sha256/{arm64.digest[7:]}" not in files

    fresh = tmp_path / "b"
    assert await cli("import", str(bundle), cache=fresh) == 0
    offline = await make_proxy(cache_dir=fresh, offline=True)
    answer = await offline.get("/v2/library/multi/manifests/1", {"Accept": OCI_INDEX})
    assert answer.status == 200
    assert digest_of(answer.body) == index_digest
    assert (await offline.get(f"/v2/library/multi/manifests/{amd64.digest}")).status == 200
    assert (await offline.get(f"/v2/library/multi/manifests/{arm64.digest}")).status != 200

    # Fetched for the export, an index comes with every platform.
    every = tmp_path / "every.tar"
    argv = ("docker.io/multi:1", "--fetch", "-o", str(every))
    assert await cli("export", *argv, cache=tmp_path / "c") == 0
    files = entries(every)
    for blob in (arm64.manifest, arm64.config, *arm64.layers, amd64.manifest):
        assert f"blobs/sha256/{digest_of(blob)[7:]}" in files


async def test_progress_without_a_terminal_is_plain_lines(
    cli: Run, tmp_path: Path, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    assert await cli("export", IMAGE, "--fetch", "-o", str(bundle), cache=tmp_path / "a") == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == f"export {IMAGE}: started"
    assert lines[1].startswith(f"export {IMAGE}: done, ")
    assert "images" in captured.out
    assert "\x1b" not in captured.err
    assert await cli("import", str(bundle), cache=tmp_path / "b") == 0
    assert f"import {IMAGE}: ready ({image.digest})" in capsys.readouterr().err


async def test_what_export_refuses(
    cli: Run, tmp_path: Path, image: FakeImage, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.tar")
    cache = tmp_path / "a"
    assert await cli("export", "-o", out, cache=cache) == 2
    assert await cli("export", IMAGE, "--all", "-o", out, cache=cache) == 2
    bad = tmp_path / "have.json"
    bad.write_text('{"format": "regcache-inventory", "version": 99}')
    assert await cli("export", IMAGE, "--have", str(bad), "-o", out, cache=cache) == 2
    assert "reads version 1" in capsys.readouterr().err
    assert await cli("export", "docker.io/library/gone:1", "--fetch", "-o", out, cache=cache) == 1
    assert "docker.io/library/gone:1: could not fetch it" in capsys.readouterr().err
    assert await cli("export", "nowhere.example/app:1", "-o", out, cache=cache) == 1
    assert "no upstream is named 'nowhere.example'" in capsys.readouterr().err


async def test_export_all_takes_every_whole_tagged_image_and_names_the_others(
    cli: Run,
    tmp_path: Path,
    registry: FakeRegistry,
    image: FakeImage,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = registry.push_image("library/other", "2", layer_sizes=(KIB,))
    cache = tmp_path / "a"
    for name in (IMAGE, "docker.io/library/other:2"):
        assert await cli("export", name, "--fetch", "-o", str(tmp_path / "x.tar"), cache=cache) == 0
    next((cache / "blobs").rglob(other.layer_digests[0][7:])).unlink()
    bundle = tmp_path / "all.tar"
    capsys.readouterr()
    assert await cli("export", "--all", "-o", str(bundle), cache=cache) == 0
    assert "left out: docker.io/library/other:2: not whole" in capsys.readouterr().err
    index = json.loads(entries(bundle)["index.json"])
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == [IMAGE]
