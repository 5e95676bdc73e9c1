"""A manifest reference: a tag or a digest."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.names import InvalidTag, validate_tag


@dataclass(frozen=True, slots=True)
class Reference:
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Raises InvalidDigest or InvalidTag."""
        if ":" in text:
            return cls(digest=Digest.parse(text))
        return cls(tag=validate_tag(text))

    def __str__(self) -> str:
        return str(self.digest) if self.digest is not None else str(self.tag)


__all__ = ["InvalidDigest", "InvalidTag", "Reference"]
