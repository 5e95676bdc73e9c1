"""The integration harness's images and its registries, checked against the real registry and
skopeo: deterministic images, pulls by tag and digest, Distribution's quirks, the access log,
and a registry that restarts or acts as a pull-through proxy."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.httpclient import http_get
from tests.support.images import (
    ACCEPT_ALL,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    build_image,
    build_index,
    sha256_digest,
)
from tests.support.registry import parse_access_log
from tests.support.upstreams import RegistryFactory, Upstream, UpstreamImages

BLOB_PATH = r"/v2/.+/blobs/sha256:[0-9a-f]{64}"


# -- images ---------------------------------------------------------------------------------


def test_images_are_deterministic_and_valid(tmp_path: Path) -> None:
    a = build_image(tmp_path / "a", "t", seed=7, layer_sizes=[1000, 5000])
    b = build_image(tmp_path / "b", "t", seed=7, layer_sizes=[1000, 5000])
    c = build_image(tmp_path / "c", "t", seed=8, layer_sizes=[1000, 5000])
    assert a.manifest == b.manifest
    assert a.manifest_digest != c.manifest_digest
    assert a.manifest_digest == sha256_digest(a.manifest)

    config = json.loads(a.config)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["type"] == "layers"
    assert config["config"]["Cmd"]
    for digest, diff_id, content_size in zip(
        a.layer_digests, config["rootfs"]["diff_ids"], [1000, 5000], strict=True
    ):
        blob = a.blob(digest)
        assert sha256_digest(blob) == digest
        tar_bytes = gzip.decompress(blob)
        assert sha256_digest(tar_bytes) == diff_id
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            (member,) = tar.getmembers()
            assert member.isfile()
            assert member.size == content_size

    manifest = json.loads(a.manifest)
    assert manifest["config"]["digest"] == a.config_digest
    assert [layer["size"] for layer in manifest["layers"]] == list(a.layer_sizes)

    layout_index = json.loads((tmp_path / "a" / "index.json").read_bytes())
    assert [m["digest"] for m in layout_index["manifests"]] == [a.manifest_digest]


def test_index_references_one_manifest_per_platform(tmp_path: Path) -> None:
    idx = build_index(tmp_path, "m", seed=3, layer_sizes=[100])
    index = json.loads(idx.index)
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert [m["digest"] for m in index["manifests"]] == list(idx.manifest_digests)
    assert idx.image("linux", "arm64").layer_digests != idx.image("linux", "amd64").layer_digests
    assert json.loads(idx.image("linux", "arm64").config)["architecture"] == "arm64"


# -- plain registry + skopeo ------------------------------------------------------------------


def test_pull_by_tag_and_by_digest_returns_the_layout_bytes(
    upstream: Upstream, tmp_path: Path
) -> None:
    small = upstream.images.small
    src = upstream.ref("library/small", "1.0")
    by_tag = skopeo.pull(src, tmp_path / "tag")
    by_digest = skopeo.pull(src, tmp_path / "digest", by_digest=small.manifest_digest)
    for pulled in (by_tag, by_digest):
        assert pulled.manifest == small.manifest
        for digest in small.blob_digests:
            assert pulled.blob(digest) == small.blob(digest)

    multi = upstream.images.multi
    assert skopeo.inspect_raw(upstream.ref("library/multi", "1.0")) == multi.index
    arm = skopeo.pull(
        upstream.ref("library/multi", "1.0"), tmp_path / "arm", platform=("linux", "arm64")
    )
    assert arm.manifest == multi.image("linux", "arm64").manifest
    everything = skopeo.pull(
        upstream.ref("library/multi", "1.0"), tmp_path / "all", all_images=True
    )
    assert everything.manifest == multi.index
    for img in multi.images:
        assert everything.instance_manifest(img.manifest_digest) == img.manifest
        assert all(everything.has_blob(d) for d in img.blob_digests)


def test_docker_flavoured_images_round_trip(upstream: Upstream, tmp_path: Path) -> None:
    listed = upstream.images.docker_multi
    assert json.loads(listed.index)["mediaType"] == DOCKER_LIST
    src = upstream.ref("library/docker-multi", "1.0")
    assert skopeo.inspect_raw(src) == listed.index
    arm = listed.image("linux", "arm64")
    assert json.loads(arm.manifest)["mediaType"] == DOCKER_MANIFEST
    pulled = skopeo.pull(src, tmp_path / "arm", platform=("linux", "arm64"))
    assert pulled.manifest == arm.manifest
    assert all(pulled.blob(d) == arm.blob(d) for d in arm.blob_digests)


def test_distribution_hides_oci_manifests_from_clients_that_do_not_accept_them(
    upstream: Upstream,
) -> None:
    # Distribution 2.8 quirks the proxy must cope with: it answers 404 for an OCI manifest,
    # even by digest, unless Accept names the OCI type (*/* is not enough); and by tag it
    # downgrades a Docker schema 2 manifest (or list) to schema 1 unless Accept names it.
    small = upstream.images.small
    url = upstream.url + "/v2/library/small/manifests/1.0"
    assert http_get(url).status == 404
    assert http_get(url, {"Accept": "*/*"}).status == 404
    resp = http_get(url, ACCEPT_ALL)
    assert resp.status == 200
    assert resp.body == small.manifest
    assert resp.headers["Docker-Content-Digest"] == small.manifest_digest

    listed = upstream.images.docker_multi
    url = upstream.url + "/v2/library/docker-multi/manifests/1.0"
    assert json.loads(http_get(url).body)["schemaVersion"] == 1
    assert http_get(url, {"Accept": f"{DOCKER_LIST}, {DOCKER_MANIFEST}"}).body == listed.index
    amd = listed.image("linux", "amd64")
    url = upstream.url + f"/v2/library/docker-multi/manifests/{amd.manifest_digest}"
    assert http_get(url).body == amd.manifest


def test_pull_of_a_missing_tag_raises_with_skopeos_message(
    upstream: Upstream, tmp_path: Path
) -> None:
    with pytest.raises(skopeo.SkopeoError, match="manifest unknown"):
        skopeo.pull(upstream.ref("library/small", "nope"), tmp_path / "out")


def test_access_log_counts_blob_gets(upstream: Upstream, tmp_path: Path) -> None:
    small = upstream.images.small
    mark = upstream.registry.mark()
    skopeo.pull(upstream.ref("library/small", "1.0"), tmp_path / "out")
    reg = upstream.registry

    assert reg.count("GET", BLOB_PATH, since=mark) == len(small.blob_digests) == 4
    assert reg.count("GET", r"/v2/library/small/manifests/1\.0", since=mark) == 1
    for digest in small.blob_digests:
        assert reg.blob_gets(digest, since=mark) == 1
    assert all(e.user_agent.startswith("skopeo/") for e in reg.requests(since=mark))
    # The harness's own readiness and sync probes never show up.
    assert not any("harness" in e.query for e in reg.requests())

    later = reg.mark()
    assert reg.count(None, r".*", since=later) == 0


def test_access_log_parser_reads_the_combined_format() -> None:
    stamp = "[27/Nov/2026:18:35:05 +0000]"
    text = "\n".join(
        [
            'time="2026-11-27T18:35:05.1Z" level=info msg="response completed"',
            f'127.0.0.1 - - {stamp} "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"',
            f'127.0.0.1 - - {stamp} "PUT /v2/x/blobs/uploads/u?digest=sha256%3Aab HTTP/1.1" '
            '201 0 "" "a \\"q\\" b"',
            f'127.0.0.1 - alice {stamp} "HEAD /v2/x/blobs/sha256:ab HTTP/1.1" 404 - "" "c"',
        ]
    )
    entries = parse_access_log(text)
    assert [(e.method, e.path, e.status) for e in entries] == [
        ("GET", "/v2/", 200),
        ("PUT", "/v2/x/blobs/uploads/u", 201),
        ("HEAD", "/v2/x/blobs/sha256:ab", 404),
    ]
    assert entries[1].query == "digest=sha256%3Aab"
    assert entries[0].size == 2
    assert entries[2].size == 0


async def test_concurrent_async_pulls(upstream: Upstream, tmp_path: Path) -> None:
    app = upstream.images.app
    pulls = [
        skopeo.pull_async(upstream.ref("org/app", "1.0"), tmp_path / f"out{i}") for i in range(3)
    ]
    for pulled in await asyncio.gather(*pulls):
        assert pulled.manifest == app.manifest


def test_second_upstream_holds_the_tool_image(second_upstream: Upstream) -> None:
    tool = second_upstream.images.tool
    assert skopeo.inspect_raw(second_upstream.ref("org/tool", "2.0")) == tool.manifest
    assert second_upstream.entry("ghcr.io") == {"name": "ghcr.io", "url": second_upstream.url}


# -- restart / outage -----------------------------------------------------------------------


def test_registry_restart_keeps_content_and_log_marks(
    registry_factory: RegistryFactory, test_images: UpstreamImages
) -> None:
    reg = registry_factory()
    skopeo.push(test_images.layout_dir, "tool", reg.ref("org/tool", "2.0"))
    mark = reg.mark()
    port, storage = reg.port, reg.storage_dir

    with reg.stopped():
        assert not reg.running
        with pytest.raises(ConnectionError):
            http_get(reg.url + "/v2/", timeout=2)
    assert (reg.port, reg.storage_dir) == (port, storage)

    assert skopeo.inspect_raw(reg.ref("org/tool", "2.0")) == test_images.tool.manifest
    assert reg.count("GET", r"/v2/org/tool/manifests/2\.0", since=mark) == 1

    reg.kill()
    reg.start()
    assert skopeo.inspect_raw(reg.ref("org/tool", "2.0")) == test_images.tool.manifest


def test_registry_as_pull_through_proxy(
    registry_factory: RegistryFactory, upstream: Upstream, tmp_path: Path
) -> None:
    mirror = registry_factory(proxy_remote=upstream.url)
    mark = upstream.registry.mark()
    pulled = skopeo.pull(mirror.ref("org/app", "1.0"), tmp_path / "out")
    assert pulled.manifest == upstream.images.app.manifest
    # Distribution 2.8's proxy mode GETs a missing blob from its remote twice (once to serve,
    # once to store), so only "at least once" is stable.
    for digest in upstream.images.app.blob_digests:
        assert upstream.registry.blob_gets(digest, since=mark) >= 1
