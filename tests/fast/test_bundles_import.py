"""Bundle import in one process: corrupt and truncated archives, archives other tools wrote
(docker save, skopeo), what import refuses, and a running regcache that serves an import at once
and keeps its own downloads going."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from proxy.oci.layout import CONTAINERD_NAME, REF_NAME
from tests.fast.conftest import KIB, ProxyFactory, stall_once
from tests.support.bundlefiles import IMAGE, Run, blob_files, entries, read, tags_of
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.waiting import wait_until


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


async def test_what_import_refuses(
    cli: Run, tmp_path: Path, image: FakeImage, bundle: Path, capsys: pytest.CaptureFixture[str]
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
