"""Range parsing: the answers aiohttp's FileResponse and regcache's own code used to give."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import RangeInvalid
from proxy.server.ranges import ByteRange, byte_range

Answer = tuple[int, int, int] | str  # (status, start, end), or the refusal


def answer(header: str | None, size: int) -> Answer:
    try:
        part = byte_range(header, size)
    except RangeInvalid as error:
        return f"{error.http_status} {error.error_code} {error.headers['Content-Range']}"
    return part.status, part.start, part.end


def before(header: str | None, size: int) -> Answer:
    """What regcache answered before ranges.py: aiohttp's parse, then its own checks."""
    request = make_mocked_request("GET", "/", headers={} if header is None else {"Range": header})
    try:
        requested = request.http_range
    except ValueError:
        return unsatisfiable(size)
    start, stop = requested.start, requested.stop
    if start is None:
        return 200, 0, size
    if start < 0 and stop is None:
        start = max(size + start, 0)
        stop = size
    end = min(stop if stop is not None else size, size)
    if start >= size or end <= start:
        return unsatisfiable(size)
    return 206, start, end


def unsatisfiable(size: int) -> str:
    return f"416 RANGE_INVALID bytes */{size}"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, (200, 0, 100)),
        (None, 0, (200, 0, 0)),
        ("bytes=0-", 100, (206, 0, 100)),
        ("bytes=10-19", 100, (206, 10, 20)),
        ("bytes=10-10", 100, (206, 10, 11)),
        ("bytes=90-500", 100, (206, 90, 100)),
        ("bytes=-30", 100, (206, 70, 100)),
        ("bytes=-500", 100, (206, 0, 100)),
        ("BYTES=1-2", 100, (206, 1, 3)),
        ("bytes=-0", 100, (206, 0, 100)),  # aiohttp's reading, kept
        ("bytes=100-", 100, unsatisfiable(100)),
        ("bytes=100-200", 100, unsatisfiable(100)),
        ("bytes=5-4", 100, unsatisfiable(100)),
        ("bytes=0-", 0, unsatisfiable(0)),
        ("bytes=-5", 0, unsatisfiable(0)),
        ("bytes=-", 100, unsatisfiable(100)),
        ("bytes=0-1,5-6", 100, unsatisfiable(100)),
        ("items=0-1", 100, unsatisfiable(100)),
        ("bytes = 0-1", 100, unsatisfiable(100)),
        ("", 100, unsatisfiable(100)),
        ("bytes=" + "9" * 5000 + "-", 100, unsatisfiable(100)),
    ],
)
def test_answers(header: str | None, size: int, expected: Answer) -> None:
    assert answer(header, size) == expected
    assert before(header, size) == expected


def test_headers_of_a_whole_and_a_partial_answer() -> None:
    assert byte_range(None, 10).headers() == {"Accept-Ranges": "bytes"}
    assert byte_range("bytes=2-4", 10) == ByteRange(2, 5, 10, partial=True)
    assert byte_range("bytes=2-4", 10).length == 3
    assert byte_range("bytes=2-4", 10).headers() == {
        "Accept-Ranges": "bytes",
        "Content-Range": "bytes 2-4/10",
    }


numbers = st.one_of(st.just(""), st.integers(0, 300).map(str), st.text("0123456789", max_size=4))
shaped = st.builds(
    "{}{}-{}{}".format,
    st.sampled_from(["bytes=", "Bytes=", "bytes =", "byte=", ""]),
    numbers,
    numbers,
    st.sampled_from(["", ",", ", 1-2", " ", "-"]),
)
# What an HTTP client can put in a header value: printable ASCII, no line breaks.
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@given(header=st.one_of(st.none(), shaped, printable), size=st.integers(0, 300))
def test_same_answers_as_before(header: str | None, size: int) -> None:
    assert answer(header, size) == before(header, size)
