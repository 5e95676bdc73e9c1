"""An upstream that lies, fails or redirects, injected in front of the real registry."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.faults import FaultyUpstream
from tests.support.ports import free_port
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream


@pytest.fixture
def proxy(faulty: FaultyUpstream, regcache_factory: RegcacheFactory) -> RegcacheProcess:
    return regcache_factory({"upstreams": [{"name": "docker.io", "url": faulty.url}]})


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


async def test_blob_with_wrong_bytes_is_never_cached_or_served_whole(
    faulty: FaultyUpstream, proxy: RegcacheProcess, upstream: Upstream
) -> None:
    image = upstream.images.small
    digest = image.layer_digests[1]
    url = f"{proxy.url}/v2/library/small/blobs/{digest}"
    faulty.faults.corrupt_blobs.add(digest)
    # The client must see a failure, not a complete body of wrong bytes.
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(url)
    assert proxy.metric("regcache_digest_mismatch_total", kind="blob") == 1
    assert not list((proxy.cache_dir / "blobs").rglob(digest[7:]))
    assert proxy.metric("regcache_cache_size_bytes") == 0

    faulty.faults.corrupt_blobs.clear()
    status, body = await fetch(url)
    assert status == 200
    assert len(body) == image.layer_sizes[1]
    assert faulty.count("GET", rf"/v2/library/small/blobs/{digest}") == 2


async def test_blob_cut_short_fails_the_client_and_caches_nothing(
    faulty: FaultyUpstream, proxy: RegcacheProcess, upstream: Upstream
) -> None:
    digest = upstream.images.small.layer_digests[2]
    faulty.faults.truncate_blobs[digest] = (100_000, 1_000)  # every attempt, resumes too
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(f"{proxy.url}/v2/library/small/blobs/{digest}")
    assert not list((proxy.cache_dir / "blobs").rglob(digest[7:]))
    assert not list((proxy.cache_dir / "tmp").iterdir())


def test_manifest_whose_digest_header_lies_is_refused(
    faulty: FaultyUpstream, proxy: RegcacheProcess, upstream: Upstream
) -> None:
    faulty.faults.wrong_manifest_digest = True
    accept = {"Accept": upstream.images.small.manifest_media_type}
    response = proxy.get("/v2/library/small/manifests/1.0", accept)
    assert response.status == 502
    assert response.json()["errors"][0]["code"] == "UNKNOWN"
    assert proxy.metric("regcache_digest_mismatch_total", kind="manifest") == 1

    faulty.faults.wrong_manifest_digest = False
    response = proxy.get("/v2/library/small/manifests/1.0", accept)
    assert response.status == 200
    assert response.body == upstream.images.small.manifest


def test_redirected_blobs_never_carry_upstream_credentials(
    faulty: FaultyUpstream, regcache_factory: RegcacheFactory, upstream: Upstream, tmp_path: Path
) -> None:
    faulty.faults.basic_auth = ("carol", "pw")
    faulty.faults.redirect_blobs = True
    proxy = regcache_factory(
        {
            "upstreams": [
                {"name": "docker.io", "url": faulty.url, "username": "carol", "password": "pw"}
            ]
        }
    )
    pulled = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "out")
    assert pulled.manifest == upstream.images.small.manifest
    assert faulty.storage_seen, "blobs should have been fetched from the storage host"
    for seen in faulty.storage_seen:
        assert "Authorization" not in seen.headers
        # A presigned URL's query must arrive byte for byte.
        assert seen.path.endswith("?sig=a%2Fb%3D%3D")
    assert any("Authorization" in s.headers for s in faulty.seen)


def test_rate_limit_passes_retry_after(faulty: FaultyUpstream, proxy: RegcacheProcess) -> None:
    faulty.faults.status[r"/v2/library/small/manifests/.*"] = (429, {"Retry-After": "42"})
    response = proxy.get("/v2/library/small/manifests/1.0")
    assert response.status == 429
    assert response.headers["Retry-After"] == "42"
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"


def test_upstream_server_error_is_unavailable(
    faulty: FaultyUpstream, proxy: RegcacheProcess
) -> None:
    faulty.faults.status[r"/v2/library/small/manifests/.*"] = (500, {})
    response = proxy.get("/v2/library/small/manifests/1.0")
    assert response.status == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_unreachable_upstream_is_a_clean_503(regcache_factory: RegcacheFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": dead}]})
    for path in ("/v2/library/x/manifests/1", "/v2/library/x/blobs/sha256:" + "a" * 64):
        response = proxy.get(path)
        assert response.status == 503
        error = response.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "Traceback" not in response.body.decode()
    assert "Traceback" not in proxy.log_text()
