"""The replicas' peer endpoint (issue 12): only a valid peer token, signed with the fleet's key
for that blob, opens it; every refusal looks the same, and a bad digest is an OCI error.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest

from proxy.config.authfiles import TokenKey
from tests.fast.conftest import REPLICA_SECRET, StartReplica, blob_path
from tests.support.clientauth import auth_settings, basic, bearer
from tests.support.fakeregistry import FakeImage, FakeRegistry


def peer_path(digest: str) -> str:
    return f"/_regcache/peer/blobs/{digest}"


def signed(digest: str, key: bytes = REPLICA_SECRET, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": "r9", "aud": "regcache-peer", "sub": digest, "iat": now, "exp": now + 30}
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


def unsigned(digest: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": "regcache-peer", "sub": digest, "iat": now, "exp": now + 30}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def refusals(digest: str, client_token: str) -> dict[str, dict[str, str]]:
    """Authorization headers that must not open the peer endpoint, by name."""
    now = int(time.time())
    return {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "garbage": bearer("not.a.jwt"),
        "basic": {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()},
        "wrong key": bearer(signed(digest, key=b"another-key-of-forty-bytes-0123456789ab")),
        "expired": bearer(signed(digest, iat=now - 120, exp=now - 60)),
        "wrong audience": bearer(signed(digest, aud="regcache")),
        "no audience": bearer(signed(digest, aud=None)),
        "no expiry": bearer(signed(digest, exp=None)),
        "lives too long": bearer(signed(digest, exp=now + 3600)),
        "another blob": bearer(signed("sha256:" + "0" * 64)),
        "alg none": bearer(unsigned(digest)),
        "a client's token": bearer(client_token),
        "huge": bearer("a" * 4000),
    }


async def test_the_peer_endpoint_wants_a_valid_peer_token_and_nothing_else_opens_it(
    start_replica: StartReplica,
    image: FakeImage,
    registry: FakeRegistry,
    tmp_path: Path,
    replica_key: TokenKey,
) -> None:
    # Logins on, and the replica key doubling as the client token key: a client's token,
    # valid for /v2, is still no peer's.
    settings = auth_settings(tmp_path, auth_anonymous=False, auth_token_key_file=replica_key)
    replica = await start_replica("r0", **settings)
    digest, layer = image.layer_digests[1], image.layers[1]
    assert (await replica.get(blob_path(digest), basic("alice", "alice-pw"))).status == 200
    issued = await replica.get(
        "/token?scope=repository:library/app:pull", basic("alice", "alice-pw")
    )
    client_token = issued.json()["token"]
    assert (await replica.get(blob_path(digest), bearer(client_token))).status == 200
    answers = {}
    for name, headers in refusals(digest, client_token).items():
        for method in ("GET", "HEAD"):
            answers[name, method] = await replica.request(method, peer_path(digest), headers)
    assert {key: answer.status for key, answer in answers.items()} == dict.fromkeys(answers, 401)
    # One answer for every refusal: nothing tells an attacker which check failed.
    bodies = {answer.body for (_, method), answer in answers.items() if method == "GET"}
    assert [json.loads(body) for body in bodies] == [
        {"errors": [{"code": "UNAUTHORIZED", "message": "peer authentication required"}]}
    ]

    token = bearer(signed(digest))
    whole = await replica.get(peer_path(digest), token)
    assert (whole.status, whole.body, whole.headers["X-Regcache-Blob-Size"]) == (
        200,
        layer,
        str(len(layer)),
    )
    ranged = await replica.get(peer_path(digest), {**token, "Range": "bytes=1000-"})
    assert (ranged.status, ranged.body) == (206, layer[1000:])
    head = await replica.head(peer_path(digest), token)
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(layer)))
    unknown = "sha256:" + "1" * 64
    missing = await replica.get(peer_path(unknown), bearer(signed(unknown)))
    assert (missing.status, missing.error_code) == (404, "BLOB_UNKNOWN")
    assert (
        await replica.metric("regcache_peer_stream_bytes", direction="sent")
        == len(layer) * 2 - 1000
    )


@pytest.mark.parametrize(
    "named",
    [
        "sha256:../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "sha256:%2E%2E%2Fblobs",
        "md5:" + "0" * 32,
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "%00",
    ],
)
async def test_the_peer_endpoint_answers_a_bad_digest_with_an_oci_error(
    start_replica: StartReplica, named: str
) -> None:
    replica = await start_replica("r0")
    # Signed for the digest as named, so that the refusal is the digest's, not the token's.
    answer = await replica.get(peer_path(named), bearer(signed(unquote(named))))
    assert answer.status in (400, 404)
    assert answer.json()["errors"][0]["code"] in ("DIGEST_INVALID", "UNSUPPORTED", "BLOB_UNKNOWN")
    assert b"Traceback" not in answer.body
