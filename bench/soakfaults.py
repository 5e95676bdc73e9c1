"""The soak's failing upstream: a forwarding proxy in front of the registry that, during random
windows, drops connections mid-body, stalls, resets or answers 5xx.

It runs as a process of its own (``python -m bench.soakfaults --upstream URL``), so its work
is not counted in the load generator's event loop, and prints the port it listens on. Its
counts are at ``GET /-/soak/stats``. Outside a fault window it forwards faithfully, streaming
bodies; inside one, each request fails with probability ``FAULT_SHARE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.relay import HOP_BY_HOP, relayed

FAULT_SHARE = 0.5
STATS_PATH = "/-/soak/stats"
_CHUNK = 64 * 1024


class FaultServer:
    def __init__(self, upstream: str, seed: int, cycle: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.cycle = cycle
        self.faulty = False
        self.windows = 0
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self._session: aiohttp.ClientSession | None = None

    async def run_windows(self) -> None:
        """Healthy for 0.5-1.0 cycles, faulty for 0.3-0.6 cycles, over and over."""
        while True:
            await asyncio.sleep(self.rng.uniform(0.5, 1.0) * self.cycle)
            self.faulty = True
            self.windows += 1
            await asyncio.sleep(self.rng.uniform(0.3, 0.6) * self.cycle)
            self.faulty = False

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "windows": self.windows,
            "faulty_now": self.faulty,
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == STATS_PATH:
            return web.json_response(self.stats())
        self.requests += 1
        fault = self._pick(request)
        if fault is not None:
            self.faults[fault] += 1
        if fault == "5xx":
            return _error(self.rng.choice((500, 502, 503)))
        if fault == "reset":
            _close(request)
            return web.Response()
        if fault == "stall" and request.method == "HEAD":
            await asyncio.sleep(self.rng.uniform(1.0, 8.0))
        try:
            return await self._forward(request, fault)
        except (TimeoutError, ConnectionError, aiohttp.ClientError):
            # The proxy behind us or regcache in front hung up (a stall it gave up on).
            _close(request)
            return web.Response()

    def _pick(self, request: web.Request) -> str | None:
        if not self.faulty or self.rng.random() >= FAULT_SHARE:
            return None
        if request.method == "GET" and request.path.startswith("/v2/") and request.path != "/v2/":
            return self.rng.choice(("5xx", "reset", "drop", "drop", "stall", "stall"))
        return self.rng.choice(("5xx", "reset", "stall"))

    async def _forward(self, request: web.Request, fault: str | None) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, allow_redirects=False
        ) as upstream:
            response = relayed(upstream)
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            length = upstream.content_length or 0
            # Where in the body the fault strikes: somewhere strictly inside it.
            cut = self.rng.randrange(1, length) if fault in ("drop", "stall") and length > 1 else -1
            sent = 0
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                if 0 <= cut < sent + len(chunk):
                    await response.write(chunk[: cut - sent])
                    if fault == "drop":
                        _close(request)
                        return response
                    await asyncio.sleep(self.rng.uniform(1.0, 8.0))
                    chunk, sent, cut = chunk[cut - sent :], cut, -1
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response

    async def serve(self, port: int) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        windows = asyncio.create_task(self.run_windows())
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            windows.cancel()
            await runner.cleanup()
            await self._session.close()


def _error(status: int) -> web.Response:
    body = {"errors": [{"code": "UNAVAILABLE", "message": "injected by the soak"}]}
    return web.json_response(body, status=status)


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


class FaultProxy:
    """The fault server as a child process of the bench."""

    def __init__(self, upstream_url: str, seed: int, cycle: float, log_path: Path) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "bench.soakfaults",
            "--upstream",
            upstream_url,
            "--seed",
            str(seed),
            "--cycle",
            str(cycle),
        ]
        self.log_path = log_path
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("w") as log:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the fault proxy did not start: {self.log_path.read_text()}")
        self.port = int(line)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + STATS_PATH, timeout=10) as resp:
            stats: dict[str, Any] = json.load(resp)
            return stats

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soakfaults")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycle", type=float, default=40.0, help="seconds per window pair")
    args = parser.parse_args()
    server = FaultServer(args.upstream, args.seed, args.cycle)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(args.port))


if __name__ == "__main__":
    main()
