"""Content digests (``algorithm:hex``) as the OCI image spec defines them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

# Only algorithms we can verify are accepted: a digest we cannot check would let
# unverified bytes into the cache.
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_ENCODED = re.compile(r"[a-f0-9]+")


class InvalidDigest(ValueError):
    """The text is not a digest regcache can verify."""


class Hasher(Protocol):
    """A running hash over bytes given piece by piece; hashlib's objects are ones. Named here
    so that interfaces can hand one over without naming hashlib's private type."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise InvalidDigest(f"digest {text[:80]!r} has no algorithm prefix")
        expected = _HEX_LENGTH.get(algorithm)
        if expected is None:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm[:20]!r}")
        if len(encoded) != expected or not _ENCODED.fullmatch(encoded):
            raise InvalidDigest(f"{algorithm} digest must be {expected} lowercase hex characters")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
