"""The tokens replicas show each other's peer endpoint (proxy.fleet.peertokens)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from proxy.fleet.peertokens import peer_token, peer_token_valid
from proxy.oci.digest import Digest

KEY = b"k" * 64
DIGEST = Digest.parse("sha256:" + "ab" * 32)


def header(token: str) -> str:
    return f"Bearer {token}"


def forged(key: bytes = KEY, algorithm: str = "HS256", **changes: Any) -> str:
    now = int(time.time())
    claims = {"aud": "regcache-peer", "sub": str(DIGEST), "iat": now, "exp": now + 30}
    claims.update(changes)
    kept = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(kept, key, algorithm=algorithm)


def test_a_token_opens_the_blob_it_names() -> None:
    token = peer_token(KEY, "r0", DIGEST)
    assert peer_token_valid(KEY, header(token), str(DIGEST))
    assert peer_token_valid(KEY, "bearer  " + token, str(DIGEST))  # as Authorization allows


NOW = int(time.time())


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic " + "a" * 20,
        header("a.b.c"),
        header(forged(key=b"x" * 40)),
        header(forged(algorithm="HS512")),
        header(forged(aud="regcache")),
        header(forged(aud=None)),
        header(forged(sub="sha256:" + "cd" * 32)),
        header(forged(sub=None)),
        header(forged(exp=None)),
        header(forged(iat=None)),
        header(forged(iat=NOW - 100, exp=NOW - 60)),
        header(forged(exp=NOW + 3600)),
        header("x" * 5000),
    ],
    ids=lambda value: (value or "none")[:24],
)
def test_anything_else_is_refused(authorization: str | None) -> None:
    assert not peer_token_valid(KEY, authorization, str(DIGEST))


def test_without_a_key_nothing_opens_it() -> None:
    token = peer_token(KEY, "r0", DIGEST)
    assert not peer_token_valid(None, header(token), str(DIGEST))
