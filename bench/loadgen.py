"""Load generators: curl for blob throughput, an asyncio HEAD generator for tag resolution.

Both share the two cores with the server they measure, so both are chosen to cost little:

* blobs: curl (C) writing to /dev/null. A sequential series is one curl process reusing one
  keep-alive connection; the parallel case is one curl process per client.
* tag HEADs: Debian's wrk 4.1 cannot do HEAD (its parser waits for the Content-Length bytes a
  HEAD response never carries, so every connection stalls), and an aiohttp client spends
  more CPU per request than the servers it would measure. So this module writes the request
  bytes once and reads only the response head off raw asyncio protocols, on uvloop when
  installed: one process, one core.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from .prereqs import which

CURL_TIMEOUT = 900.0
_CURL_FORMAT = "%{http_code} %{size_download} %{time_total}\\n"


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Transfer:
    status: int
    size: int
    seconds: float


@dataclass(frozen=True)
class FetchResult:
    """Blob downloads: aggregate rate over the wall time of the whole batch."""

    clients: int
    transfers: tuple[Transfer, ...]
    wall_s: float

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s > 0 else 0.0


async def _curl(url: str, times: int, new_connection: bool = False) -> list[Transfer]:
    """``new_connection``: ask the server to close after each response (``Connection: close``),
    so each fetch pays for a connect and whatever the server sets up per connection."""
    curl = which("curl")
    if curl is None:
        raise LoadError("curl is not installed (apt-get install curl)")
    argv = [curl, "--noproxy", "*", "--silent", "--show-error", "--write-out", _CURL_FORMAT]
    if new_connection:
        argv += ["--header", "Connection: close"]
    for _ in range(times):
        argv += ["--output", "/dev/null", url]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(CURL_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise LoadError(f"curl {url} exited with {proc.returncode}: {err.decode().strip()}")
    transfers = []
    for line in out.decode().splitlines():
        status, size, seconds = line.split()
        transfers.append(Transfer(int(status), int(size), float(seconds)))
    return transfers


async def fetch_sequential(
    url: str, times: int, expected_size: int, new_connection: bool = False
) -> FetchResult:
    started = time.perf_counter()
    transfers = await _curl(url, times, new_connection)
    wall = time.perf_counter() - started
    _check(transfers, times, expected_size, url)
    return FetchResult(1, tuple(transfers), wall)


async def fetch_parallel(
    url: str, clients: int, times_each: int, expected_size: int, new_connection: bool = False
) -> FetchResult:
    started = time.perf_counter()
    batches = await asyncio.gather(
        *(_curl(url, times_each, new_connection) for _ in range(clients))
    )
    wall = time.perf_counter() - started
    transfers = [t for batch in batches for t in batch]
    _check(transfers, clients * times_each, expected_size, url)
    return FetchResult(clients, tuple(transfers), wall)


def _check(transfers: Sequence[Transfer], count: int, size: int, url: str) -> None:
    bad = [t for t in transfers if t.status != 200 or t.size != size]
    if len(transfers) != count or bad:
        raise LoadError(f"{url}: expected {count} x 200 with {size} bytes, got {bad[:3]}")


# -- HEAD load ------------------------------------------------------------------------------


@dataclass
class _Tally:
    measure_from: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    reconnects: int = 0
    all_responses: int = 0  # the warm-up's too


@dataclass(frozen=True)
class HeadLoadResult:
    connections: int
    all_responses: int
    duration_s: float
    requests: int
    statuses: dict[int, int]
    reconnects: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


class _HeadConnection(asyncio.Protocol):
    """One keep-alive connection sending the same HEAD back to back until the deadline."""

    def __init__(self, request: bytes, deadline: float, tally: _Tally) -> None:
        self._request = request
        self._deadline = deadline
        self._tally = tally
        self._buffer = b""
        self._sent_at = 0.0
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        # A HEAD response is its head alone, whatever its Content-Length says.
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            now = time.perf_counter()
            tally = self._tally
            tally.all_responses += 1
            if self._sent_at >= tally.measure_from:
                status = int(head[9:12])
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                tally.latencies.append(now - self._sent_at)
            assert self._transport is not None
            if now >= self._deadline or b"\r\nconnection: close" in head.lower():
                self._transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _connection_loop(
    host: str, port: int, request: bytes, deadline: float, tally: _Tally
) -> None:
    loop = asyncio.get_running_loop()
    first = True
    while time.perf_counter() < deadline:
        if not first:
            tally.reconnects += 1
        first = False
        _, protocol = await loop.create_connection(
            lambda: _HeadConnection(request, deadline, tally), host, port
        )
        await protocol.closed


async def head_load(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    connections: int,
    duration: float,
    warmup: float,
) -> HeadLoadResult:
    """``connections`` clients each sending HEAD ``path`` back to back for warmup + duration
    seconds; only requests sent after the warm-up count."""
    lines = [f"HEAD {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: regcache-bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    start = time.perf_counter()
    tally = _Tally(measure_from=start + warmup)
    deadline = start + warmup + duration
    async with asyncio.timeout(warmup + duration + 60):
        await asyncio.gather(
            *(_connection_loop(host, port, request, deadline, tally) for _ in range(connections))
        )
    latencies = sorted(tally.latencies)
    if not latencies:
        raise LoadError(f"no HEAD {path} completed on {host}:{port} in {duration} s")
    return HeadLoadResult(
        connections=connections,
        all_responses=tally.all_responses,
        duration_s=duration,
        requests=len(latencies),
        statuses=dict(tally.statuses),
        reconnects=tally.reconnects,
        rps=len(latencies) / duration,
        p50_ms=_percentile(latencies, 50) * 1e3,
        p90_ms=_percentile(latencies, 90) * 1e3,
        p99_ms=_percentile(latencies, 99) * 1e3,
        max_ms=latencies[-1] * 1e3,
    )


def _percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest rank: the value below which ``pct`` percent of the samples fall."""
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]
