"""No cross-repository reads, end to end: a real Distribution upstream, a real regcache
process, skopeo pulling the private image, and plain HTTP asking for it under other names."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RegcacheFactory, RegistryFactory
from tests.support import skopeo
from tests.support.httpclient import HttpResponse
from tests.support.images import ImageInfo
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream, UpstreamImages, push_repos

PRIVATE = "acme/private"
PUBLIC = "library/public"
MIRROR = "mirror.example.com"  # a second upstream entry for the same registry
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def blob_bytes(image: ImageInfo, digest: str) -> bytes:
    return (image.layout_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def assert_refused(answer: HttpResponse, status: int, code: str, secret: bytes) -> None:
    assert answer.status == status, answer
    assert answer.json()["errors"][0]["code"] == code
    assert secret not in answer.body


def other_names(kind: str, ref: str) -> list[str]:
    return [
        f"/v2/{PUBLIC}/{kind}/{ref}",
        f"/v2/{PUBLIC}/{kind}/{ref}?ns={MIRROR}",
        f"/v2/{MIRROR}/{PUBLIC}/{kind}/{ref}",
    ]


def test_a_private_layer_is_not_served_under_another_repository_or_upstream(
    registry_factory: RegistryFactory,
    regcache_factory: RegcacheFactory,
    test_images: UpstreamImages,
    tmp_path: Path,
) -> None:
    registry = registry_factory()
    push_repos(registry, test_images, ((f"{PRIVATE}:1.0", "tool"), (f"{PUBLIC}:1.0", "app")))
    entries = [
        {"name": "docker.io", "url": registry.url},
        {"name": MIRROR, "url": registry.url},
    ]
    proxy: RegcacheProcess = regcache_factory(
        {"default_upstream": "docker.io", "upstreams": entries}
    )
    image = test_images.tool
    pulled = skopeo.pull(proxy.ref(PRIVATE, "1.0"), tmp_path / "private")
    assert pulled.manifest == image.manifest

    mark = registry.mark()
    for digest in (*image.layer_digests, image.config_digest):
        secret = blob_bytes(image, digest)
        for path in other_names("blobs", digest):
            assert_refused(proxy.get(path), 404, "BLOB_UNKNOWN", secret)
            assert proxy.request("HEAD", path).status == 404
    for path in other_names("manifests", image.manifest_digest):
        assert_refused(proxy.get(path, ACCEPT), 404, "MANIFEST_UNKNOWN", image.manifest)
    assert registry.blob_gets(since=mark) == 0

    # The private repository itself, through the other upstream name: the upstream has it
    # there, so one HEAD confirms it and the bytes come from the cache.
    digest = image.layer_digests[0]
    answer = proxy.get(f"/v2/{PRIVATE}/blobs/{digest}?ns={MIRROR}")
    assert (answer.status, answer.body) == (200, blob_bytes(image, digest))
    assert registry.blob_gets(since=mark) == 0


def test_an_upstream_entry_without_the_credentials_gets_the_upstreams_refusal(
    basic_upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    entries = [basic_upstream.entry(), {"name": MIRROR, "url": basic_upstream.url}]
    proxy = regcache_factory({"default_upstream": "docker.io", "upstreams": entries})
    image = basic_upstream.images.app
    skopeo.pull(proxy.ref("org/app", "1.0"), tmp_path / "app")
    digest = image.layer_digests[0]
    secret = blob_bytes(image, digest)
    answer = proxy.get(f"/v2/org/app/blobs/{digest}?ns={MIRROR}")
    assert_refused(answer, 401, "UNAUTHORIZED", secret)
    # With the credentials, but a repository that does not hold it.
    assert_refused(proxy.get(f"/v2/library/small/blobs/{digest}"), 404, "BLOB_UNKNOWN", secret)
    assert proxy.get(f"/v2/org/app/blobs/{digest}").body == secret
