"""Builds the aiohttp application and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from proxy.auth.gate import Gate
from proxy.auth.sharedlimit import failure_limiter
from proxy.cache.passthrough import Passthrough
from proxy.cache.prefetch import Prefetcher
from proxy.cache.references import References
from proxy.cache.usage import PullCounter
from proxy.config import Config
from proxy.metrics import CONTENT_TYPE
from proxy.routing import Router
from proxy.server.accesslog import ACCESS_LOGGER, AccessLogger
from proxy.server.cacheparts import CacheParts, open_cache
from proxy.server.handlers import Services, V2Handlers
from proxy.server.login import token_endpoint
from proxy.server.middleware import API_VERSION_HEADER, error_middleware
from proxy.server.peer import PEER_ROUTE, PeerEndpoint
from proxy.server.reload import RELOADERS, reload_on_sighup
from proxy.server.status import History, status_document
from proxy.server.tls import listening_context
from proxy.store import BlobStore, Index, IndexUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", Services)
CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", BlobStore)
INDEX = web.AppKey("index", Index)
ROUTER = web.AppKey("router", Router)
STARTED = web.AppKey("started", float)
HISTORY = web.AppKey("history", History)
PREFETCHER = web.AppKey("prefetcher", Prefetcher)
PEER = web.AppKey("peer", PeerEndpoint)
WORKER = web.AppKey("worker", str)
# Which of the workers answered (its index): where connections land, for the tests and for
# an operator looking at one slow worker.
WORKER_HEADER = "X-Regcache-Worker"
# Kubernetes gives a readiness probe 1 s by default; a backend slower than that is out.
READY_CHECK_TIMEOUT = 0.9
# Names the shared backends a ready replica cannot reach, for probes and load balancers that
# read headers rather than bodies.
DEGRADED_HEADER = "X-Regcache-Degraded"
STATUS_PAGE = Path(__file__).parent / "static" / "status.html"


def build_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = config
    app[STARTED] = time.time()
    # Built here so a missing default upstream fails at start, not at the first request.
    app[ROUTER] = Router(config)
    app.cleanup_ctx.append(_lifecycle)
    app[RELOADERS] = []
    app.on_response_prepare.append(_api_version_header)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _status_page)
    app.router.add_get("/status.json", _status)
    app.router.add_get("/token", _token)
    app.router.add_post("/token", _token)
    # Other replicas' way in (peer.py): its own token, outside the client gate.
    app.router.add_get(PEER_ROUTE, _peer)
    app.router.add_route("*", "/v2", _dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", _dispatch)
    return app


def _gate(app: web.Application, parts: CacheParts, passthrough: Passthrough) -> Gate | None:
    """The login check, with its htpasswd file re-read on SIGHUP; None with logins off."""
    config = app[CONFIG]
    if not config.logins_needed:
        return None
    limiter = failure_limiter(parts.index)
    gate = Gate(config, parts.metrics, passthrough.vouch, limiter)
    if gate.passwords is not None:
        app[RELOADERS].append(gate.passwords.reload)
    return gate


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when asked for, or when ``auto`` finds it installed; asyncio's loop otherwise."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit(
                    "regcache: event_loop is uvloop but uvloop is not installed"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with open_cache(config) as parts:
        clients, metrics = parts.clients, parts.metrics
        passthrough = Passthrough(clients, References(clients, parts.usage))
        app[STORE] = parts.store
        app[INDEX] = parts.index
        app[SERVICES] = Services(
            router=app[ROUTER],
            manifests=parts.manifests,
            blobs=parts.blobs,
            clients=clients,
            metrics=metrics,
            pulls=PullCounter(),
            passthrough=passthrough,
            gate=_gate(app, parts, passthrough),
        )
        key = config.replica_secret_file.secret if config.replica_secret_file else None
        app[PEER] = PeerEndpoint(key, parts.blobs, parts.store, metrics)
        app[HISTORY] = History()
        sampler = asyncio.create_task(app[HISTORY].run(metrics))
        app[PREFETCHER] = _prefetcher(config, parts)
        # Not its size: a large cache is measured when first asked, which start-up does not
        # wait for.
        log.info("cache at %s", config.cache_dir)
        try:
            yield
        finally:
            sampler.cancel()
            await app[PREFETCHER].stop()


def _prefetcher(config: Config, parts: CacheParts) -> Prefetcher:
    """The config's prefetch schedule, running; idle when offline, with no upstream to ask."""
    prefetcher = Prefetcher(
        config.prefetch,
        parts.router,
        parts.manifests,
        parts.blobs,
        parts.store,
        parts.index,
        parts.metrics,
        parts.leases,
        _worker_marks(config),
    )
    if config.prefetch and config.offline:
        log.info("offline: the prefetch schedule does not run")
    else:
        prefetcher.start()
    return prefetcher


def _worker_marks(config: Config) -> Path | None:
    """Where the workers of one server mark what one of them did for all (prefetch runs)."""
    if (config.workers or 1) == 1:
        return None
    marks = config.cache_dir / ".locks"
    marks.mkdir(parents=True, exist_ok=True)
    return marks


async def _dispatch(request: web.Request) -> web.StreamResponse:
    return await V2Handlers(request.app[SERVICES]).dispatch(request)


async def _peer(request: web.Request) -> web.StreamResponse:
    return await request.app[PEER].handle(request)


async def _token(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return await token_endpoint(request, services.gate, services.router)


async def _api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/v2"):
        response.headers.setdefault(*API_VERSION_HEADER)


async def _worker_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[WORKER_HEADER] = request.app[WORKER]


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    probe = request.app[CONFIG].cache_dir / "tmp" / f"ready-{uuid.uuid4().hex}"
    try:
        await asyncio.to_thread(_write_and_remove, probe)
    except OSError as exc:
        return web.Response(status=503, text=f"cache directory not writable: {exc}\n")
    # Asked afresh on every probe, which is also how the S3 store notices it is back when
    # no pull has touched it since its outage.
    checks = {"s3": request.app[STORE].check, "redis": request.app[INDEX].check}
    reached = await asyncio.gather(*(_reaches(check) for check in checks.values()))
    out = [name for name, ok in zip(checks, reached, strict=True) if not ok]
    if out:
        # Degraded, not down: pulls are still served, uncached or unshared. Every replica
        # shares the backends, so a 503 would take them all out of the Service at once.
        lines = "".join(f"degraded: {name} unreachable\n" for name in out)
        return web.Response(text=lines, headers={DEGRADED_HEADER: ",".join(out)})
    return web.Response(text="ready\n")


async def _reaches(check: Callable[[], Awaitable[None]]) -> bool:
    """Whether a shared backend answers, within a readiness probe's usual timeout."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            await check()
    except (TimeoutError, StoreUnavailable, IndexUnavailable):
        return False
    return True


def _write_and_remove(path: os.PathLike[str]) -> None:
    with open(path, "wb") as probe:
        probe.write(b"ok")
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


async def _status_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATUS_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


async def _status(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    size = await request.app[STORE].total_size()
    history = request.app[HISTORY]
    document = status_document(services, services.pulls, history, request.app[STARTED], size)
    document["prefetch"] = request.app[PREFETCHER].status()
    # Its figures are every worker's sums; ``inflight`` lists the answering worker's downloads.
    document["workers"] = request.app[CONFIG].workers or 1
    return web.json_response(document, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[SERVICES].metrics
    # The one reader of the gauge, so the one place it is brought up to date.
    metrics.cache_size.set(await request.app[STORE].total_size())
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def run_server(
    config: Config, sock: socket.socket | None = None, worker: int | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, reloading on SIGHUP. Blocks. ``sock``: listen there
    rather than at ``config.listen``, as ``worker`` (its index) of several.

    Raises ConfigError when a TLS file broke between loading the config and now.
    """
    app = build_app(config)
    if worker is not None:
        app[WORKER] = str(worker)
        app.on_response_prepare.append(_worker_header)
    ssl_context = listening_context(app, config)
    loop = new_event_loop(config.event_loop)
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    reload_on_sighup(loop, app)
    web.run_app(
        loop=loop,
        app=app,
        host=None if sock else config.listen_host,
        port=None if sock else config.listen_port,
        sock=sock,
        backlog=config.listen_backlog,
        ssl_context=ssl_context,
        print=lambda message: log.info("%s", message),
        shutdown_timeout=30,
        access_log=ACCESS_LOGGER,
        access_log_class=AccessLogger,
    )
