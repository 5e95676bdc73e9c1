"""The one place errors become responses: OCI error JSON, never a traceback."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import RegistryError, Unsupported

log = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")

# aiohttp's own refusals (no route, wrong method, body too large) in OCI terms.
_HTTP_CODES = {404: "UNSUPPORTED", 405: "UNSUPPORTED", 413: "SIZE_INVALID"}


def render(error: RegistryError) -> web.Response:
    headers = dict(error.headers)
    headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    return web.json_response(error.to_json(), status=error.http_status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as error:
        if error.http_status >= 500:
            log.warning("%s %s: %s %s", request.method, request.path, error.message, error.detail)
        return render(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "UNKNOWN")
        return render(Unsupported(exc.reason, status=exc.status, code=code))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return render(RegistryError("internal error; see regcache's log"))
