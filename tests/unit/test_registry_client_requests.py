"""The typed registry client's requests, against a small in-process registry that misbehaves on
request: what each method asks and answers, the errors status codes become, credentials and
redirects."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestServer

from proxy import errors
from proxy.oci.digest import Digest
from tests.support.misbehaving import (
    BASIC,
    BLOB,
    BLOB_DIGEST,
    MANIFEST,
    MANIFEST_DIGEST,
    MANIFEST_TYPE,
    PASSWORD,
    TOKEN,
    USER,
    Harness,
    read_blob,
)

# -- what each method answers -------------------------------------------------------------


async def test_manifest_head_and_get(harness: Harness) -> None:
    client = harness.client()
    head = await client.head_manifest("x", "latest", (MANIFEST_TYPE,))
    assert head.digest == MANIFEST_DIGEST
    assert head.size == len(MANIFEST)
    assert head.media_type == MANIFEST_TYPE + "; charset=utf-8"
    manifest = await client.get_manifest("x", "latest", (MANIFEST_TYPE,), None)
    assert manifest.digest == MANIFEST_DIGEST
    assert manifest.body == MANIFEST
    assert manifest.media_type == MANIFEST_TYPE
    accepts = [headers.getall("Accept") for _, _, headers in harness.fake.seen]
    assert accepts == [[MANIFEST_TYPE], [MANIFEST_TYPE]]


async def test_manifest_head_without_a_digest_says_so(harness: Harness) -> None:
    harness.fake.digest_header = None
    head = await harness.client().head_manifest("x", "latest", ())
    assert head.digest is None
    assert head.size == len(MANIFEST)


async def test_blob_head_and_tags_and_ping(harness: Harness) -> None:
    client = harness.client()
    await client.ping()
    head = await client.head_blob("x", BLOB_DIGEST)
    assert (head.digest, head.size) == (BLOB_DIGEST, len(BLOB))
    tags = await client.list_tags("x", "2", "a")
    assert json.loads(tags.body)["tags"] == ["a", "b"]
    assert tags.content_type.startswith("application/json")
    assert tags.link == '</v2/x/tags/list?last=b&n=2>; rel="next"'
    assert harness.fake.seen[-1][1] == "/v2/x/tags/list?n=2&last=a"


async def test_blob_head_for_another_digest_is_invalid(harness: Harness) -> None:
    other = Digest.of(b"other")
    harness.fake.forced[f"/v2/x/blobs/{other}"] = (200, {"Docker-Content-Digest": "sha256:1"})
    with pytest.raises(errors.UpstreamInvalid):
        await harness.client().head_blob("x", other)
    assert harness.metric("regcache_digest_mismatch_total", kind="blob") == 1


async def test_namespace_goes_upstream_when_the_url_is_another_host(harness: Harness) -> None:
    await harness.client(name="docker.io").head_manifest("library/x", "latest", ())
    assert harness.fake.seen[-1][1] == "/v2/library/x/manifests/latest?ns=docker.io"


async def test_offline_asks_nothing(harness: Harness) -> None:
    with pytest.raises(errors.UpstreamOffline):
        await harness.client(offline=True).head_blob("x", BLOB_DIGEST)
    assert harness.fake.seen == []


# -- status codes --------------------------------------------------------------------------


async def test_not_found_is_named_after_what_was_asked(harness: Harness) -> None:
    client = harness.client()
    missing = Digest.of(b"missing")
    with pytest.raises(errors.ManifestUnknown):
        await client.head_manifest("x", "nope", ())
    with pytest.raises(errors.ManifestUnknown):
        await client.get_manifest("x", "nope", (), None)
    with pytest.raises(errors.BlobUnknown):
        await client.head_blob("x", missing)
    with pytest.raises(errors.BlobUnknown):
        await read_blob(client, digest=missing)
    harness.fake.forced["/v2/x/tags/list"] = (404, {})
    with pytest.raises(errors.NameUnknown):
        await client.list_tags("x")


@pytest.mark.parametrize(
    ("status", "headers", "error", "code"),
    [
        (401, {}, errors.Unauthorized, "UNAUTHORIZED"),
        (403, {}, errors.Denied, "DENIED"),
        (429, {"Retry-After": "30"}, errors.TooManyRequests, "TOOMANYREQUESTS"),
        (500, {}, errors.UpstreamUnavailable, "UNAVAILABLE"),
        (503, {}, errors.UpstreamUnavailable, "UNAVAILABLE"),
    ],
)
async def test_failing_statuses(
    harness: Harness,
    status: int,
    headers: dict[str, str],
    error: type[errors.RegistryError],
    code: str,
) -> None:
    harness.fake.forced["/v2/x/manifests/latest"] = (status, headers)
    client = harness.client()
    with pytest.raises(error) as raised:
        await client.get_manifest("x", "latest", (), None)
    assert raised.value.error_code == code
    assert raised.value.headers == headers
    assert raised.value.detail["upstream_status"] == status
    failed = harness.metric("regcache_upstream_requests_total", method="GET", status=str(status))
    assert failed == 1


# -- credentials and redirects -------------------------------------------------------------


async def test_bearer_challenge_then_retry_then_token_up_front(harness: Harness) -> None:
    harness.fake.auth = "bearer"
    client = harness.client()
    await client.head_manifest("x", "latest", ())
    await client.head_manifest("x", "latest", ())
    assert harness.fake.authorizations() == [None, TOKEN, TOKEN]
    assert harness.fake.token_queries == [{"scope": "repository:x:pull", "service": "fake"}]


async def test_basic_challenge_then_retry(harness: Harness) -> None:
    harness.fake.auth = "basic"
    await harness.client(username=USER, password=PASSWORD).head_blob("x", BLOB_DIGEST)
    assert harness.fake.authorizations() == [None, BASIC]


async def test_refused_credentials_are_unauthorized(harness: Harness) -> None:
    harness.fake.auth = "basic"
    with pytest.raises(errors.Unauthorized):
        await harness.client(username=USER, password="wrong").head_blob("x", BLOB_DIGEST)
    assert len(harness.fake.seen) == 2


async def test_redirect_to_another_host_carries_no_credentials(harness: Harness) -> None:
    storage = TestServer(harness.fake.app(), host="127.0.0.1")
    await storage.start_server()
    try:
        harness.fake.auth = "basic"
        harness.fake.redirect_to = str(storage.make_url("")).rstrip("/")
        size, body = await read_blob(harness.client(username=USER, password=PASSWORD))
    finally:
        await storage.close()
    assert size == len(BLOB)
    assert body == BLOB
    assert harness.fake.authorizations()[-1] == BASIC
    assert [headers.get("Authorization") for headers in harness.fake.storage_seen] == [None]
