"""The typed registry client's handling of bodies, against a small in-process registry that
misbehaves on request: manifests checked against their digest and size, blobs streamed and
resumed from the byte reached."""

from __future__ import annotations

from typing import Any

import pytest

from proxy import errors
from proxy.oci.digest import Digest
from tests.support.misbehaving import BLOB, MANIFEST_DIGEST, Harness, read_blob
from tests.support.ports import free_port

# -- verification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sha256:" + "0" * 64, None),  # the body does not hash to what the upstream claims
        ("sha256:" + "0" * 64, MANIFEST_DIGEST),  # the body is right, the claim is not
        (None, Digest.of(b"expected")),  # the body is not what the client asked for
    ],
)
async def test_manifest_that_does_not_match_its_digest(
    harness: Harness, header: str | None, expected: Digest | None
) -> None:
    harness.fake.digest_header = header
    with pytest.raises(errors.UpstreamInvalid) as raised:
        await harness.client().get_manifest("x", "latest", (), expected)
    assert raised.value.detail["actual"] == str(MANIFEST_DIGEST)
    assert raised.value.detail["header"] == header
    assert harness.metric("regcache_digest_mismatch_total", kind="manifest") == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_manifest(harness: Harness, chunked: bool) -> None:
    harness.fake.manifest = b" " * (4 * 1024 * 1024 + 1)
    harness.fake.chunked = chunked
    with pytest.raises(errors.UpstreamInvalid, match="larger than 4 MiB") as raised:
        await harness.client().get_manifest("x", "latest", (), None)
    # A declared length is refused before a byte of the body is read.
    assert raised.value.detail == (None if chunked else {"size": len(harness.fake.manifest)})


# -- the blob stream -----------------------------------------------------------------------


async def test_blob_streams_whole(harness: Harness) -> None:
    assert await read_blob(harness.client()) == (len(BLOB), BLOB)
    assert harness.fake.ranges() == []
    assert harness.metric("regcache_upstream_bytes_total") == len(BLOB)


@pytest.mark.parametrize(
    ("fault", "config"),
    [
        ({"drops": [300_000]}, {}),
        ({"stalls": [300_000]}, {"read_timeout": 0.2}),
        # An upstream that ignores Range sends the blob again from its start: skipped ahead.
        ({"drops": [300_000], "ignore_range": True}, {}),
    ],
    ids=["dropped", "stalled", "range-ignored"],
)
async def test_blob_resumes_from_the_byte_reached(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    config: dict[str, Any],
) -> None:
    for knob, value in fault.items():
        setattr(harness.fake, knob, value)
    assert await read_blob(harness.client(**config)) == (len(BLOB), BLOB)
    (ranged,) = harness.fake.ranges()
    resumed_at = int(ranged.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 300_000
    assert f"resuming from byte {resumed_at}" in caplog.text
    assert harness.metric("regcache_upstream_resumes_total") == 1
    assert harness.metric("regcache_upstream_bytes_total") == len(BLOB)


async def test_resume_with_the_wrong_range_is_invalid(harness: Harness) -> None:
    harness.fake.drops = [300_000]
    harness.fake.content_range_offset = 1
    with pytest.raises(errors.UpstreamInvalid, match="wrong range"):
        await read_blob(harness.client())


async def test_blob_gives_up_after_three_resumes(harness: Harness) -> None:
    harness.fake.drops = [100_000] * 4
    with pytest.raises(errors.UpstreamUnavailable, match="mid-blob") as raised:
        await read_blob(harness.client())
    assert raised.value.detail["size"] == len(BLOB)
    # Bytes still in flight when the connection closed may be lost with it.
    assert 0 < raised.value.detail["received"] <= 400_000
    assert len(harness.fake.ranges()) == 3


async def test_blob_from_an_offset(harness: Harness) -> None:
    assert await read_blob(harness.client(), 1000) == (len(BLOB), BLOB[1000:])
    harness.fake.ignore_range = True
    assert await read_blob(harness.client(), 1000) == (len(BLOB), BLOB[1000:])


async def test_connection_refused_is_unavailable(harness: Harness) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = harness.client(name="refusing", url=url)
    with pytest.raises(errors.UpstreamUnavailable, match="upstream refusing unreachable"):
        await client.head_manifest("x", "latest", ())
    with pytest.raises(errors.UpstreamUnavailable):
        await read_blob(client)
    assert client.health.healthy is False
    assert harness.metric(
        "regcache_upstream_requests_total", upstream="refusing", method="GET", status="error"
    )
