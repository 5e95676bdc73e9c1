"""What part of a blob a request's ``Range`` header asks for, decided in one place.

One range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) is read as aiohttp reads it, and
answered as its FileResponse did: 206 with that part, however much of the blob it covers,
or 416 with ``Content-Range: bytes */size`` when no byte of it is there, in the OCI error
form. Anything else in the header (several ranges, other units, junk) is a 416 too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.errors import RangeInvalid

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``[start, end)`` of a blob of ``size`` bytes; ``partial`` for a 206."""

    start: int
    end: int
    size: int
    partial: bool

    @property
    def status(self) -> int:
        return 206 if self.partial else 200

    @property
    def length(self) -> int:
        return self.end - self.start

    def headers(self) -> dict[str, str]:
        headers = {"Accept-Ranges": "bytes"}
        if self.partial:
            headers["Content-Range"] = f"bytes {self.start}-{self.end - 1}/{self.size}"
        return headers


def byte_range(header: str | None, size: int) -> ByteRange:
    """The part of a ``size``-byte blob to send for a ``Range`` header (None: no header).

    Raises RangeInvalid.
    """
    if header is None:
        return ByteRange(0, size, size, partial=False)
    match = _SINGLE_RANGE.fullmatch(header)
    if match is None or match[1] == match[2] == "":
        raise unsatisfiable(size)
    try:
        first = int(match[1]) if match[1] else None
        last = int(match[2]) if match[2] else None
    except ValueError:  # more digits than int() takes
        raise unsatisfiable(size) from None
    if first is None:
        assert last is not None
        # The last ``last`` bytes; aiohttp reads ``-0`` as the whole blob, and so does this.
        start, end = max(size - last, 0) if last else 0, size
    elif last is None:
        start, end = first, size
    elif first > last:
        raise unsatisfiable(size)
    else:
        start, end = first, min(last + 1, size)
    if start >= size or end <= start:
        raise unsatisfiable(size)
    return ByteRange(start, end, size, partial=True)


def unsatisfiable(size: int) -> RangeInvalid:
    return RangeInvalid(headers={"Content-Range": f"bytes */{size}"})
