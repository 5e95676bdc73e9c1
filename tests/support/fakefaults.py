"""What the in-process fake registry (tests.support.fakeregistry) does wrong when asked.

A test adds ``Fault``s to ``FakeRegistry.faults``; each request takes the first one whose
method and path match, which then counts down its ``times``. One fault may combine knobs
(ignore Range *and* drop the connection, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from aiohttp import web

# The OCI code a fault's status answers with, unless the fault names one.
STATUS_CODES = {
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "MANIFEST_UNKNOWN",
    429: "TOOMANYREQUESTS",
}
WRONG_DIGEST = "sha256:" + "0" * 64


@dataclass
class Fault:
    path: str = r"/.*"  # regex, matched against the whole request path (no query)
    method: str | None = None  # None: any method
    times: int | None = None  # how many requests it spoils; None: all of them
    status: int | None = None  # answer this status with an OCI error body, nothing else
    code: str | None = None  # the error body's code; from STATUS_CODES by default
    headers: dict[str, str] = field(default_factory=dict)  # added to the answer, any status
    drop_after: int | None = None  # bodies: close the connection after this many bytes
    stall: tuple[int, float] | None = None  # bodies: (after bytes, go silent for seconds)
    ignore_range: bool = False  # answer 200 and the whole body to a Range request
    wrong_body: bool = False  # flip the body's first byte, keep its length and digest
    wrong_digest: bool = False  # claim another Docker-Content-Digest
    chunked: bool = False  # send no Content-Length
    delay: float = 0.0  # wait this long before answering at all, any method (a slow upstream)
    # bodies, with stall: silent until this is set (or for stall's seconds, whichever is first)
    release: asyncio.Event | None = None
    redirect: bool = False  # blobs: 307 to the same bytes on another origin (localhost)
    location: str | None = None  # blobs: 307 to this URL; {port} is the registry's port

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.method is None or self.method == method) and bool(
            re.fullmatch(self.path, path)
        )


def take_fault(faults: list[Fault], method: str, path: str) -> Fault | None:
    for fault in faults:
        if fault.matches(method, path):
            if fault.times is not None:
                fault.times -= 1
            return fault
    return None


def oci_error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    document = {"errors": [{"code": code, "message": f"fake registry says {code}"}]}
    return web.json_response(document, status=status, headers=headers)


def fault_answer(fault: Fault) -> web.Response:
    assert fault.status is not None
    code = fault.code or STATUS_CODES.get(fault.status, "UNKNOWN")
    return oci_error(fault.status, code, fault.headers)


async def send_body(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    body: bytes,
    fault: Fault | None,
) -> web.StreamResponse:
    """``body`` as the answer, spoilt as ``fault`` says."""
    fault = fault or Fault()
    await asyncio.sleep(fault.delay)
    if fault.wrong_body and body:
        body = bytes([body[0] ^ 0xFF]) + body[1:]
    response = web.StreamResponse(status=status, headers={**headers, **fault.headers})
    if not fault.chunked:
        response.content_length = len(body)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    if fault.drop_after is not None:
        await response.write(body[: fault.drop_after])
        # As on a real network, the bytes arrive before the cut: aiohttp's client drops data
        # that arrives together with the connection's end.
        await asyncio.sleep(0.02)
        assert request.transport is not None
        request.transport.close()
        return response
    if fault.stall is not None:
        after, seconds = fault.stall
        await response.write(body[:after])
        if fault.release is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fault.release.wait(), seconds)
        body = body[after:]
    await response.write(body)
    await response.write_eof()
    return response


def byte_range(request: web.Request, size: int) -> tuple[int, int] | web.Response | None:
    """``[start, end)`` of a Range request, None without one, or the 416 to answer."""
    header = request.headers.get("Range")
    if header is None:
        return None
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
    if match is None or int(match[1]) >= size:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    end = min(int(match[2]) + 1, size) if match[2] else size
    return int(match[1]), end
