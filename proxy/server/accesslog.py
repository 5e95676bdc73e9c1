"""One access record per request: what was asked, where it went, what the cache did."""

from __future__ import annotations

import logging
import os
import threading
import time
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

    @property
    def enabled(self) -> bool:
        # aiohttp skips log() altogether when this is False (access records filtered out).
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        record = request.get(RECORD) if isinstance(request, web.Request) else None
        method, path = request.method, request.path_qs
        duration_ms = round(time * 1000, 2)
        sent = _body_bytes(request, response)
        if record is not None and record.bytes_sent is not None:
            sent = record.bytes_sent
        fields: dict[str, Any] = {
            "client": request.remote,
            "method": method,
            "path": path,
            "status": response.status,
            "bytes": sent,
            "duration_ms": duration_ms,
            "user_agent": request.headers.get("User-Agent"),
        }
        message = f'{fields["client"]} "{method} {path}" {response.status} {sent} {duration_ms}ms'
        if record is not None:
            fields.update(
                upstream=record.upstream,
                repository=record.repository,
                reference=record.reference,
                kind=record.kind,
                cache=record.cache,
            )
            if record.cache:
                message += f" {record.kind}:{record.cache}"
        entry = _record(self.logger.name, message)
        entry.fields = fields
        self.logger.handle(entry)


# Per thread (the event loop's, in practice): the fields of a record that are the same for
# every access record it logs. Emptied in a forked child, whose process id is another.
_TEMPLATES: dict[tuple[int, str], dict[str, Any]] = {}
os.register_at_fork(after_in_child=_TEMPLATES.clear)


def _record(name: str, message: str) -> logging.LogRecord:
    """The LogRecord logger.info would make, made here rather than there: logger.info looks up
    the calling source line (a stack walk per request, for a location no access line shows),
    and LogRecord() asks for the thread, the process and their names again each time."""
    key = (threading.get_ident(), name)
    template = _TEMPLATES.get(key)
    if template is None:
        made = logging.LogRecord(name, logging.INFO, "", 0, "", None, None)
        template = _TEMPLATES[key] = dict(made.__dict__)
    entry = logging.LogRecord.__new__(logging.LogRecord)
    entry.__dict__.update(template)
    entry.msg = message
    # As LogRecord.__init__ sets them.
    created = time.time()
    entry.created = created
    entry.msecs = int((created - int(created)) * 1000) + 0.0
    entry.relativeCreated = template["relativeCreated"] + (created - template["created"]) * 1000
    return entry


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent. aiohttp counts the headers in ``body_length``; a response that went
    out whole sent its declared length, one cut short sent less than body_length says."""
    if request.method == "HEAD":
        return 0
    declared = response.content_length
    if declared is None:
        return response.body_length
    return min(declared, response.body_length)
