"""Every way an upstream can fail us, as the RegistryError a client sees.

Two kinds: the connection failed (aiohttp's exceptions, timeouts), or the upstream
answered with a status that is not a success. Both are translated here and nowhere else,
so the layers above never see aiohttp.
"""

from __future__ import annotations

import json

import aiohttp

from proxy.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    UpstreamUnavailable,
)
from proxy.model import Kind
from proxy.upstream.body import read_at_most

# What aiohttp raises when the connection, not the upstream's answer, failed. Its read
# timeouts are both; a bare TimeoutError comes from asyncio's own timeouts.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError)
MAX_ERROR_BODY = 64 * 1024
# An error body is a courtesy: if it cannot be read or parsed, the status still says enough.
_UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    *TRANSPORT_ERRORS,
)

_NOT_FOUND: dict[Kind | None, type[RegistryError]] = {
    Kind.MANIFEST: ManifestUnknown,
    Kind.BLOB: BlobUnknown,
    None: NameUnknown,
}


def describe(exc: BaseException) -> str:
    """A transport failure in a few words; some (a bare timeout) have no message."""
    return str(exc) or type(exc).__name__


def unavailable(exc: BaseException, message: str, **detail: object) -> UpstreamUnavailable:
    """The error for a transport failure (one of TRANSPORT_ERRORS); raise it ``from exc``."""
    return UpstreamUnavailable(message, detail={**detail, "error": describe(exc)})


async def error_from(response: aiohttp.ClientResponse, kind: Kind | None) -> RegistryError:
    """The client-facing error for an upstream answer that is not a success.

    4xx answers keep the upstream's own code and message; the upstream knows best why.
    """
    status = response.status
    code, message, detail = await _upstream_error(response)
    base_detail = {"upstream_status": status, **({"upstream": detail} if detail else {})}
    if status == 404:
        error_class = _NOT_FOUND[kind]
        if code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"):
            return error_class(message, base_detail, code=code)
        return error_class(message, base_detail)
    if status == 401:
        return Unauthorized(message or "upstream refused regcache's credentials", base_detail)
    if status == 403:
        return Denied(message, base_detail)
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        headers = {"Retry-After": retry_after} if retry_after else {}
        return TooManyRequests(message, base_detail, headers=headers)
    if 400 <= status < 500:
        return RegistryError(message, base_detail, status=status, code=code or "UNKNOWN")
    return UpstreamUnavailable(f"upstream answered {status}", base_detail)


async def _upstream_error(
    response: aiohttp.ClientResponse,
) -> tuple[str | None, str | None, object]:
    try:
        body = await read_at_most(response, MAX_ERROR_BODY)
        first = json.loads(body)["errors"][0]
        return str(first.get("code")), str(first.get("message") or "") or None, first.get("detail")
    except _UNREADABLE:
        return None, None, None
    finally:
        response.release()
