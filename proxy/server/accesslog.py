"""One access record per request: what was asked, where it went, what the cache did."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS_LOGGER = logging.getLogger("regcache.access")


@dataclass
class RequestRecord:
    """Filled in by the handlers as the request goes down the data path."""

    upstream: str | None = None
    repository: str | None = None
    reference: str | None = None
    kind: str | None = None
    cache: str | None = None  # hit | miss | revalidated | stale | error
    # Body bytes sent, where the handler knows them: sendfile goes around aiohttp's counter.
    bytes_sent: int | None = None


RECORD = web.RequestKey("regcache_record", RequestRecord)


class AccessLogger(AbstractAccessLogger):
    """Text for people, or structured fields the JSON formatter turns into one object."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        record = request.get(RECORD) if isinstance(request, web.Request) else None
        fields: dict[str, Any] = {
            "client": request.remote,
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": _body_bytes(request, response),
            "duration_ms": round(time * 1000, 2),
            "user_agent": request.headers.get("User-Agent"),
        }
        if record is not None:
            fields.update(
                upstream=record.upstream,
                repository=record.repository,
                reference=record.reference,
                kind=record.kind,
                cache=record.cache,
            )
            if record.bytes_sent is not None:
                fields["bytes"] = record.bytes_sent
        message = f'{fields["client"]} "{request.method} {request.path_qs}" {response.status} '
        message += f"{fields['bytes']} {fields['duration_ms']}ms"
        if record is not None and record.cache:
            message += f" {record.kind}:{record.cache}"
        self.logger.info(message, extra={"fields": fields})


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent. aiohttp counts the headers in ``body_length``; a response that went
    out whole sent its declared length, one cut short sent less than body_length says."""
    if request.method == "HEAD":
        return 0
    declared = response.content_length
    if declared is None:
        return response.body_length
    return min(declared, response.body_length)
