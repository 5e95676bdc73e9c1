"""Sending part of a file on an aiohttp response with the kernel's sendfile.

Every blob goes out as spans: a cached one in one span, a download in spans of a file that
is still growing, which aiohttp's FileResponse cannot do. This is FileResponse's sendfile
path for a span, with the same fallback.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from proxy.model import FileSpan

FALLBACK_CHUNK = 256 * 1024


async def send_span(request: web.Request, response: web.StreamResponse, span: FileSpan) -> None:
    """The headers must be out already (a prepared StreamResponse sends them at once)."""
    transport = request.transport
    # loop.sendfile refuses a closing transport with a RuntimeError; a client that left is
    # a ConnectionError everywhere else.
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost")
    if transport.get_extra_info("sslcontext") is not None:
        # The kernel cannot encrypt, so this is a copy whatever happens; asyncio's own
        # fallback would swap the connection's protocol and move 16 KiB per trip to a thread,
        # where this one moves 256 KiB, reads at offsets, and is the path uvloop takes too.
        await _copy(response, span)
        return
    try:
        await asyncio.get_running_loop().sendfile(transport, span.file, span.offset, span.count)
    except NotImplementedError:
        # uvloop, or a transport that cannot sendfile: copy through user space.
        await _copy(response, span)


async def _copy(response: web.StreamResponse, span: FileSpan) -> None:
    offset, remaining = span.offset, span.count
    fd = span.file.fileno()
    while remaining > 0:
        chunk = await asyncio.to_thread(os.pread, fd, min(FALLBACK_CHUNK, remaining), offset)
        if not chunk:
            raise ConnectionResetError("file ended before the span")
        await response.write(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
