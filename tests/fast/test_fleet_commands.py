"""The cache commands pointed at the shared backends (Redis and an S3 bucket), as an operator
runs them beside a fleet: `ls` sees what the replicas cached, `export` writes it from the
bucket, `import` fills another fleet's Redis and bucket, which then serves it offline, and
`rm` takes it out for every replica at once."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import build_parser
from proxy.commands.export import export
from proxy.commands.importbundle import import_bundle
from proxy.commands.listing import list_images
from proxy.commands.removal import remove_images
from tests.fast.conftest import ProxyFactory
from tests.fast.test_manage import as_json, pull
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry, digest_of

IMAGE = "docker.io/library/app:1.0"
COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "export": export,
    "import": import_bundle,
}


def other_site(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """The same Redis and bucket under prefixes of their own: another fleet's cache."""
    prefix = hashlib.sha256((settings["storage_s3_prefix"] + name).encode()).hexdigest()[:16]
    return {
        **settings,
        "index_redis_prefix": settings["index_redis_prefix"] + name + ":",
        "storage_s3_prefix": prefix + "/",
    }


def config_file(path: Path, settings: dict[str, Any], registry: FakeRegistry) -> Path:
    """A regcache.yaml for the backends in ``settings``, the S3 keys in files beside it."""
    key_id, key = path.with_suffix(".key-id"), path.with_suffix(".key")
    key_id.write_text(settings["storage_s3_access_key_id"])
    key.write_text(settings["storage_s3_secret_access_key"])
    document = {
        "upstreams": [{"name": "docker.io", "url": registry.url}],
        "index": {
            "backend": "redis",
            "redis": {
                "url": settings["index_redis_url"],
                "prefix": settings["index_redis_prefix"],
            },
        },
        "storage": {
            "backend": "s3",
            "s3": {
                "endpoint": settings["storage_s3_endpoint"],
                "bucket": settings["storage_s3_bucket"],
                "region": settings["storage_s3_region"],
                "prefix": settings["storage_s3_prefix"],
                "access_key_id_file": str(key_id),
                "secret_access_key_file": str(key),
            },
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def run(command: str, *argv: str, config: Path, cache: Path) -> int:
    args = build_parser().parse_args(
        [command, *argv, "--config", str(config), "--cache-dir", str(cache)]
    )
    return await COMMANDS[command](args)


async def test_ls_export_import_and_rm_work_on_the_shared_backends(
    make_proxy: ProxyFactory,
    registry: FakeRegistry,
    image: FakeImage,
    redis_settings: dict[str, Any],
    s3_settings: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = {**redis_settings, **s3_settings}
    replica = await make_proxy(**site)
    await pull(replica, image)
    status, rows = await as_json(capsys, list_images(replica.config, as_json=True))
    assert (status, [row["digest"] for row in rows]) == (0, [image.digest])

    seen = len(registry.seen)
    bundle = tmp_path / "bundle.tar"
    here = config_file(tmp_path / "here.yaml", site, registry)
    assert await run("export", IMAGE, "-o", str(bundle), config=here, cache=tmp_path / "x") == 0

    there = other_site(site, "there")
    elsewhere = config_file(tmp_path / "there.yaml", there, registry)
    assert await run("import", str(bundle), config=elsewhere, cache=tmp_path / "y") == 0
    assert len(registry.seen) == seen, "export and import are served by the shared backends"

    # Two replicas of the other fleet, each on an empty disk, offline.
    offline = [await make_proxy(**there, offline=True) for _ in range(2)]
    for server in offline:
        manifest = await server.get("/v2/library/app/manifests/1.0", {"Accept": OCI_MANIFEST})
        assert (manifest.status, manifest.body) == (200, image.manifest)
        for layer in image.layers:
            answer = await server.get(f"/v2/library/app/blobs/{digest_of(layer)}")
            assert (answer.status, answer.body) == (200, layer)
    assert len(registry.seen) == seen

    status, _ = await as_json(capsys, remove_images(offline[0].config, [IMAGE], as_json=True))
    assert status == 0
    for server in offline:
        gone = await server.get("/v2/library/app/manifests/1.0", {"Accept": OCI_MANIFEST})
        assert gone.status == 404
