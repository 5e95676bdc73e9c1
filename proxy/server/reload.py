"""SIGHUP: re-read the files that may change under a running regcache, without a restart.

Anything reloadable appends a callback to ``app[RELOADERS]`` (build_app makes the list): the TLS
certificate (proxy.server.tls) does, and so can e.g. an htpasswd file. Each callback runs in
the event loop, in the order appended, and must be quick and synchronous; it must catch and
log its own failure and keep what it had, because one bad file must not take the old
certificate or the other reloads down with it. A callback that raises anyway is logged and
the others still run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

Reloader = Callable[[], None]
RELOADERS = web.AppKey("reloaders", list[Reloader])


def reload_on_sighup(loop: asyncio.AbstractEventLoop, app: web.Application) -> None:
    """Run ``app[RELOADERS]`` on every SIGHUP; ``loop`` runs the app in the main thread."""
    loop.add_signal_handler(signal.SIGHUP, reload_all, app)


def reload_all(app: web.Application) -> None:
    log.info("SIGHUP: reloading %d reloadable file(s)", len(app[RELOADERS]))
    for reload in app[RELOADERS]:
        try:
            reload()
        except Exception:
            log.exception("reload by %r failed; it keeps its previous state", reload)
