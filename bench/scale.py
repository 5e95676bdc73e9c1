"""``python -m bench scale``: how each peer's cost grows with the number of images it caches.

The upstream holds N synthetic small images (bench/synthetic.py: manifest, config, one 4 KiB
layer each), written into its storage before it starts. For each peer, one at a time, and
each N, on a cold cache: every image pulled once at concurrency 64 (cold), then again (warm),
then tag HEADs at random over the N for a fixed time; then the server's RSS and the disk its
cache takes, and a restart on the same cache (until ``/v2/`` answers, until a cached manifest
is served). Last, on the warm peer: 1,000 simultaneous connects and 10,000 idle connections.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.httpclient import http_request
from tests.support.process import ServerProcess

from . import connections, scaleclient
from .peers import Direct, DistributionProxy, Nginx, Peer, Regcache, Upstream
from .procfs import cpu_seconds, total_pss, total_rss
from .scenarios import MANIFEST_ACCEPT, upstream_requests
from .synthetic import SyntheticImage, describe

Log = Callable[[str], None]


@dataclass(frozen=True)
class ScaleSettings:
    sizes: tuple[int, ...]
    concurrency: int = 64
    client_processes: int = 2
    head_seconds: float = 10.0
    burst: int = 1000
    idle: int = 10_000
    hold_seconds: float = 10.0


@dataclass(frozen=True)
class Phase:
    """One load phase: what the clients did and what it cost the serving side."""

    result: scaleclient.PullResult
    cpu_s: float | None
    upstream_requests: int

    def cpu_per_1000(self) -> float | None:
        if self.cpu_s is None or not self.result.images:
            return None
        return self.cpu_s / self.result.images * 1000


@dataclass(frozen=True)
class Restart:
    v2_s: float  # from the start of the process until GET /v2/ answered 200
    first_hit_s: float  # ... until GET of a cached manifest (by digest) answered 200
    upstream_requests: int  # what the peer asked the upstream meanwhile


@dataclass
class ScaleRun:
    peer: str
    images: int
    cold: Phase | None = None
    warm: Phase | None = None
    heads: Phase | None = None
    rss_fresh: int | None = None  # just started, cache empty
    rss_warm: int | None = None  # after the warm pulls and the HEADs
    # The same, as PSS: pages the processes share counted once (bench/procfs.py).
    pss_fresh: int | None = None
    pss_warm: int | None = None
    disk_bytes: int | None = None
    restart: Restart | None = None


@dataclass(frozen=True)
class ConnectionRun:
    burst: connections.Burst
    held: connections.Held
    rss_before: int | None
    rss_held: int | None

    def mb_per_1000(self) -> float | None:
        if self.rss_before is None or self.rss_held is None or not self.held.opened:
            return None
        return (self.rss_held - self.rss_before) / 1e6 / self.held.opened * 1000


@dataclass
class PeerScale:
    peer: str
    description: str
    runs: dict[int, ScaleRun] = field(default_factory=dict)
    connections: ConnectionRun | None = None
    notes: list[str] = field(default_factory=list)


async def run_peer(peer: Peer, upstream: Upstream, settings: ScaleSettings, log: Log) -> PeerScale:
    out = PeerScale(peer.name, peer.description)
    host, port_text = peer.host.rsplit(":", 1)
    port = int(port_text)
    caching = not isinstance(peer, Direct)
    for n in settings.sizes:
        peer.start_cold()
        pids = peer.memory_pids()
        run = out.runs[n] = ScaleRun(
            peer.name, n, rss_fresh=total_rss(pids), pss_fresh=total_pss(pids)
        )
        phases = ["cold", "warm"] if caching else ["cold"]
        for name in phases:
            log(f"{peer.name}: {name} pulls of {n:,} images, concurrency {settings.concurrency}")
            phase = await _measure(peer, upstream, settings, host, port, n, None)
            setattr(run, name, phase)
            log(
                f"{peer.name}: {phase.result.images_per_s:,.0f} images/s, "
                f"{phase.result.requests_per_s:,.0f} req/s, "
                f"{phase.upstream_requests:,} upstream requests"
            )
        log(f"{peer.name}: tag HEADs at random over {n:,} images, {settings.head_seconds:g} s")
        run.heads = await _measure(peer, upstream, settings, host, port, n, settings.head_seconds)
        log(f"{peer.name}: {run.heads.result.images_per_s:,.0f} HEADs/s")
        if not caching:
            continue
        pids = peer.memory_pids()
        run.rss_warm, run.pss_warm = total_rss(pids), total_pss(pids)
        cache = _cache_dir(peer)
        run.disk_bytes = None if cache is None else disk_usage(cache)
        run.restart = restart(peer, upstream, describe(n - 1))
        log(
            f"{peer.name}: RSS {_mb(run.rss_warm)} MB, PSS {_mb(run.pss_warm)} MB, "
            f"disk {_mb(run.disk_bytes)} MB, "
            f"restart: /v2/ {run.restart.v2_s:.2f} s, first hit {run.restart.first_hit_s:.2f} s"
        )
    out.connections = await _connections(peer, host, port, settings, log)
    return out


async def _measure(
    peer: Peer,
    upstream: Upstream,
    settings: ScaleSettings,
    host: str,
    port: int,
    count: int,
    head_seconds: float | None,
) -> Phase:
    mark = upstream.registry.mark()
    before = cpu_seconds(peer.cpu_pids())
    result = await scaleclient.run(
        host,
        port,
        count,
        concurrency=settings.concurrency,
        processes=settings.client_processes,
        head_seconds=head_seconds,
    )
    after = cpu_seconds(peer.cpu_pids())
    cpu = None if before is None or after is None else after - before
    return Phase(result, cpu, upstream_requests(upstream, mark).total)


async def _connections(
    peer: Peer, host: str, port: int, settings: ScaleSettings, log: Log
) -> ConnectionRun:
    log(f"{peer.name}: {settings.burst:,} simultaneous connects")
    burst = await connections.burst(host, port, settings.burst)
    log(
        f"{peer.name}: {burst.dropped_syns} dropped SYNs, all connected in "
        f"{burst.connect_all_s:.2f} s, {burst.answered:,} answered"
    )
    log(f"{peer.name}: {settings.idle:,} idle keep-alive connections, {settings.hold_seconds:g} s")
    await asyncio.sleep(1.0)  # the burst's connections are gone from the server
    pids = peer.memory_pids()
    before = total_rss(pids)
    async with connections.IdleConnections(host, port, settings.idle) as idle:
        held_rss = total_rss(pids)
        await asyncio.sleep(settings.hold_seconds)
        held = connections.Held(
            settings.idle,
            idle.opened,
            idle.still_open(),
            settings.hold_seconds,
            idle.open_s,
            idle.errors,
        )
    run = ConnectionRun(burst, held, before, held_rss)
    log(
        f"{peer.name}: {held.opened:,} opened in {held.open_s:.1f} s, {held.open_after_hold:,} "
        f"still open after {held.hold_s:g} s, {_num(run.mb_per_1000())} MB per 1,000"
        + (f", errors {held.errors}" if held.errors else "")
    )
    return run


def restart(peer: Peer, upstream: Upstream, image: SyntheticImage) -> Restart:
    """Stop the peer and start it on the same cache; time ``/v2/`` and a cached manifest."""
    server = _server(peer)
    if server is None:
        raise ValueError(f"{peer.name} has no process of its own to restart")
    peer.stop()
    mark = upstream.registry.mark()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, in the measuring thread
            errors.append(exc)

    started = time.perf_counter()
    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    v2 = _first_ok(f"{peer.url}/v2/", {}, started, errors)
    path = f"/v2/{image.repository}/manifests/{image.manifest_digest}"
    hit = _first_ok(peer.url + path, {"Accept": MANIFEST_ACCEPT}, started, errors)
    starter.join(60)
    return Restart(v2, hit, upstream_requests(upstream, mark).total)


def _first_ok(
    url: str, headers: dict[str, str], started: float, errors: list[BaseException]
) -> float:
    deadline = started + 120
    while time.perf_counter() < deadline:
        if errors:
            raise RuntimeError(f"restart failed: {errors[0]}")
        try:
            if http_request("GET", url, headers, timeout=5).status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer 200 within 120 s of the restart")


def _server(peer: Peer) -> ServerProcess | None:
    if isinstance(peer, Regcache | Nginx):
        return peer.process
    if isinstance(peer, DistributionProxy):
        return peer.registry
    return None


def _cache_dir(peer: Peer) -> Path | None:
    if isinstance(peer, Regcache | Nginx):
        return peer.process.cache_dir
    if isinstance(peer, DistributionProxy):
        return peer.registry.storage_dir
    return None


def disk_usage(root: Path) -> int:
    """Bytes allocated to the files under ``root`` (what ``du`` counts, directories aside)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue  # removed while we walked (a temporary file)
    return total


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
