"""Bundles end to end in one process: export from a cache the fake registry filled, the archive
as other tools read it, import into another cache, and an offline regcache serving it."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.commands.export import export
from proxy.commands.importbundle import import_bundle
from proxy.commands.inventory import inventory
from proxy.oci.layout import CONTAINERD_NAME, REF_NAME
from proxy.store.diskindex import DiskIndex
from tests.fast.conftest import KIB, ProxyFactory, stall_once
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, digest_of
from tests.support.waiting import wait_until

IMAGE = "docker.io/library/app:1.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "export": export,
    "import": import_bundle,
    "inventory": inventory,
}
Run = Callable[..., Awaitable[int]]


@pytest.fixture
def config_file(tmp_path: Path, registry: FakeRegistry) -> Path:
    path = tmp_path / "regcache.yaml"
    path.write_text(f"upstreams:\n  - name: docker.io\n    url: {registry.url}\n")
    return path


@pytest.fixture
def cli(config_file: Path) -> Run:
    """``await cli("export", IMAGE, "-o", ..., cache=DIR)``: a command in this event loop."""

    async def run(command: str, *argv: str, cache: Path) -> int:
        args = build_parser().parse_args(
            [command, *argv, "--config", str(config_file), "--cache-dir", str(cache)]
        )
        return await COMMANDS[command](args)

    return run


def entries(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


async def tags_of(cache: Path) -> dict[str, str]:
    index = DiskIndex(cache / "index")
    try:
        return {f"{k.repository}:{k.tag}": str(e.digest) async for k, e in index.tags()}
    finally:
        await index.close()


def leftovers(directory: Path) -> list[Path]:
    """Bundles, whole or partial, in ``directory``."""
    return [*directory.glob("bundle.tar"), *directory.glob(".bundle.tar.*")]


def read(path: Path) -> bytes:
    return path.read_bytes()


def blob_files(cache: Path) -> set[str]:
    return {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}


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


@pytest.fixture
async def bundle(cli: Run, tmp_path: Path, image: FakeImage) -> Path:
    path = tmp_path / "bundle.tar"
    assert await cli("export", IMAGE, "--fetch", "-o", str(path), cache=tmp_path / "a") == 0
    return path


def flip_byte_in(bundle: Path, digest: str, into: Path) -> Path:
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        member = tar.getmember(f"blobs/sha256/{digest[7:]}")
    data[member.offset_data + member.size // 2] ^= 0x01
    into.write_bytes(bytes(data))
    return into


async def test_corrupt_and_truncated_bundles_are_rejected_and_leave_the_cache_unchanged(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = tmp_path / "b"
    layer = image.layer_digests[1]
    flipped = flip_byte_in(bundle, layer, tmp_path / "flipped.tar")
    data = read(bundle)
    with tarfile.open(bundle) as tar:
        at_boundary = tar.getmember(f"blobs/sha256/{image.digest[7:]}").offset
        last = tar.getmember("index.json")
    no_end = last.offset_data + last.size + (-last.size % 512)
    cuts = {"mid-entry": len(data) // 2, "between entries": at_boundary, "no end": no_end}
    assert await cli("import", str(flipped), cache=fresh) == 1
    assert f"blobs/sha256/{layer[7:]}: expected {layer}" in capsys.readouterr().err
    for where, cut in cuts.items():
        truncated = tmp_path / f"cut-{cut}.tar"
        truncated.write_bytes(data[:cut])
        assert await cli("import", str(truncated), cache=fresh) == 1, where
        assert "rejected" in capsys.readouterr().err, where
        assert await tags_of(fresh) == {}, where
        assert blob_files(fresh) == set(), where

    assert await cli("import", str(bundle), cache=fresh) == 0
    assert (await tags_of(fresh))["library/app:1.0"] == image.digest


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


async def test_a_running_server_serves_an_import_at_once(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path, make_proxy: ProxyFactory
) -> None:
    fresh = tmp_path / "b"
    offline = await make_proxy(cache_dir=fresh, offline=True)
    layer = f"/v2/library/app/blobs/{image.layer_digests[0]}"
    # Asked before the import: nothing it answers now may stick.
    accept = {"Accept": OCI_MANIFEST}
    assert (await offline.get("/v2/library/app/manifests/1.0", accept)).status != 200
    assert (await offline.get(f"/v2/library/app/manifests/{image.digest}")).status != 200
    assert (await offline.get(layer)).status != 200
    assert await cli("import", str(bundle), cache=fresh) == 0
    assert (await offline.get("/v2/library/app/manifests/1.0", accept)).body == image.manifest
    assert (await offline.get(f"/v2/library/app/manifests/{image.digest}")).status == 200
    assert (await offline.get(layer)).body == image.layers[0]


def rewritten(bundle: Path, into: Path, annotations: dict[str, str], **extra: bytes) -> Path:
    """The bundle as another tool writes it: these annotations, index.json first, and
    ``extra`` files (Docker's manifest.json)."""
    files = entries(bundle)
    index = json.loads(files.pop("index.json"))
    for descriptor in index["manifests"]:
        descriptor["annotations"] = annotations
    with tarfile.open(into, "w") as tar:
        for name, data in {"index.json": json.dumps(index).encode(), **extra, **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return into


def skopeo_style(bundle: Path, into: Path, ref_name: str) -> Path:
    """As skopeo's ``oci-archive:FILE:NAME`` writes it: only the OCI ref name."""
    return rewritten(bundle, into, {REF_NAME: ref_name})


async def test_an_archive_docker_saved_is_named_by_its_containerd_name(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path
) -> None:
    # Docker 25 and later: the full name for containerd, the tag alone as the OCI ref name.
    names = {CONTAINERD_NAME: IMAGE, REF_NAME: "1.0"}
    saved = rewritten(bundle, tmp_path / "saved.tar", names, **{"manifest.json": b"[]"})
    assert await cli("import", str(saved), cache=tmp_path / "b") == 0
    assert (await tags_of(tmp_path / "b"))["library/app:1.0"] == image.digest


async def test_an_archive_that_names_its_image_only_by_tag_wants_name(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = skopeo_style(bundle, tmp_path / "skopeo.tar", "1.0")
    fresh = tmp_path / "b"
    assert await cli("import", str(archive), cache=fresh) == 1
    assert "give its full name with --name" in capsys.readouterr().err
    assert await tags_of(fresh) == {}
    assert (
        await cli("import", str(archive), "--name", "docker.io/library/app:1.5", cache=fresh) == 0
    )
    assert (await tags_of(fresh))["library/app:1.5"] == image.digest

    named = skopeo_style(bundle, tmp_path / "named.tar", IMAGE)
    assert await cli("import", str(named), cache=tmp_path / "c") == 0


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
    cli: Run,
    tmp_path: Path,
    registry: FakeRegistry,
    image: FakeImage,
    capsys: pytest.CaptureFixture[str],
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


async def test_what_import_refuses(
    cli: Run,
    tmp_path: Path,
    registry: FakeRegistry,
    image: FakeImage,
    bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fresh = tmp_path / "b"
    not_tar = tmp_path / "not.tar"
    not_tar.write_bytes(b"hello" * 1000)
    assert await cli("import", str(not_tar), cache=fresh) == 1
    assert "rejected" in capsys.readouterr().err

    two = tmp_path / "two.tar"
    second = "docker.io/library/app@" + image.digest
    assert await cli("export", IMAGE, second, "-o", str(two), cache=tmp_path / "a") == 0
    assert await cli("import", str(two), "--name", IMAGE, cache=fresh) == 1
    assert "one-image archive; this one has 2" in capsys.readouterr().err

    wrong = skopeo_style(bundle, tmp_path / "wrong.tar", "docker.io/library/app@sha256:" + "0" * 64)
    assert await cli("import", str(wrong), cache=fresh) == 1
    assert "which names another digest" in capsys.readouterr().err
    assert await tags_of(fresh) == {}


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


async def test_an_imported_tag_replaces_what_clients_were_answered_before(
    cli: Run, tmp_path: Path, registry: FakeRegistry, image: FakeImage, make_proxy: ProxyFactory
) -> None:
    far = tmp_path / "far"
    accept = {"Accept": OCI_MANIFEST}
    # The fake registry answers whatever the client accepts: this one is answered with an OCI
    # manifest it did not ask for, remembered under its Accept list all the same.
    docker_only = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    server = await make_proxy(cache_dir=far)
    for asked in (accept, docker_only):
        assert (await server.get("/v2/library/app/manifests/1.0", asked)).body == image.manifest
    moved = registry.push_image("library/app", "1.0", layer_sizes=(KIB,), seed=7)
    update = tmp_path / "update.tar"
    assert await cli("export", IMAGE, "--fetch", "-o", str(update), cache=tmp_path / "a") == 0

    assert await cli("import", str(update), cache=far) == 0
    await server.restart(offline=True)
    assert (await server.get("/v2/library/app/manifests/1.0", accept)).body == moved.manifest
    # Not the old answer, which no longer is the tag's.
    assert (await server.get("/v2/library/app/manifests/1.0", docker_only)).status == 404


async def test_an_import_leaves_a_running_servers_downloads_alone(
    cli: Run, tmp_path: Path, registry: FakeRegistry, image: FakeImage, make_proxy: ProxyFactory
) -> None:
    other = tmp_path / "other.tar"
    registry.push_image("library/other", "1", layer_sizes=(KIB,))
    argv = ("docker.io/library/other:1", "--fetch", "-o", str(other))
    assert await cli("export", *argv, cache=tmp_path / "a") == 0
    far = tmp_path / "far"
    server = await make_proxy(cache_dir=far)
    layer = image.layer_digests[1]
    registry.faults.append(stall_once(layer, seconds=1.0))
    pull = asyncio.create_task(server.get(f"/v2/library/app/blobs/{layer}"))

    def under_way() -> bool:
        return any((far / "tmp").iterdir())

    await asyncio.to_thread(wait_until, under_way, "the download under way", 5.0)

    assert await cli("import", str(other), cache=far) == 0
    answer = await pull
    assert answer.status == 200
    assert answer.body == image.layers[1]
    assert layer[7:] in blob_files(far)
