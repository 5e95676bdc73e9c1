"""The tokens replicas show each other: short-lived JWTs (HS256, PyJWT) signed with the key
every replica reads from ``replica.secret_file``.

A token is for one blob (its ``sub``) and for the peer endpoint only (its audience), and
lives a minute at most: one that leaks from a log serves little, and nothing else.
"""

from __future__ import annotations

import time

from proxy.oci.digest import Digest

# PyJWT is imported where a token is made or read: only replicas of a fleet do either, and a
# lone server, which imports this module all the same, is spared loading it.

AUDIENCE = "regcache-peer"
ALGORITHM = "HS256"
TOKEN_SECONDS = 30
# Clocks of replicas on different nodes disagree a little.
LEEWAY_SECONDS = 5
MAX_TOKEN_LENGTH = 2048


def peer_token(key: bytes, replica: str, digest: Digest) -> str:
    """A token that lets its bearer read ``digest`` from a peer for a little while."""
    import jwt

    now = int(time.time())
    claims = {
        "iss": replica,
        "aud": AUDIENCE,
        "sub": str(digest),
        "iat": now,
        "exp": now + TOKEN_SECONDS,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def peer_token_valid(key: bytes | None, authorization: str | None, digest: str) -> bool:
    """Whether an Authorization header carries a valid peer token for ``digest`` (as the
    request names it: checked before anything is parsed). Every failure is the same False:
    a caller learns nothing from which check refused it."""
    if key is None or authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        return False
    import jwt

    try:
        # One algorithm only: never "none", never a key read as some other kind of key.
        claims = jwt.decode(
            token.strip(),
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "aud", "sub"]},
        )
    except jwt.PyJWTError:
        return False
    lifetime = claims["exp"] - claims["iat"]
    return bool(claims["sub"] == digest and 0 < lifetime <= 2 * TOKEN_SECONDS)
