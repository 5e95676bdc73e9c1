"""Many connections at once: a burst of simultaneous connects, and thousands held idle.

* burst: ``count`` connects issued in one go (non-blocking sockets), each then sending
  ``GET /v2/`` and reading the status line. The kernel's TcpExt ListenOverflows and ListenDrops
  counters (machine-wide; the run is the only burst on the machine) say how many SYNs a full
  accept queue dropped: a dropped SYN is retried after a second, so it also shows in the time.
* idle: ``count`` keep-alive connections opened in batches, each sending one ``GET /v2/`` and
  then staying open; the server's RSS before and after says what a held connection costs, and
  after ``hold`` seconds the client counts how many the server has not closed.

Both need as many descriptors as connections: :func:`raise_nofile` lifts the soft limit to the
hard one, and the servers started after it inherit the same limit.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

_REQUEST = b"GET /v2/ HTTP/1.1\r\nHost: bench\r\nUser-Agent: regcache-bench\r\n\r\n"


def raise_nofile() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen_drops() -> int:
    """TcpExt ListenOverflows + ListenDrops, machine-wide."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split(), values.split(), strict=True))
            return int(table["ListenOverflows"]) + int(table["ListenDrops"])
    raise RuntimeError("no TcpExt line in /proc/net/netstat")


@dataclass(frozen=True)
class Burst:
    connections: int
    dropped_syns: int
    connect_all_s: float  # until every connect completed
    answer_all_s: float  # until every GET /v2/ was answered
    answered: int


async def burst(host: str, port: int, count: int = 1000) -> Burst:
    loop = asyncio.get_running_loop()
    socks = []
    before = listen_drops()
    started = time.perf_counter()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        socks.append(sock)

    async def one(sock: socket.socket) -> tuple[float, bool]:
        await loop.sock_connect(sock, (host, port))
        connected = time.perf_counter()
        await loop.sock_sendall(sock, _REQUEST)
        reply = await loop.sock_recv(sock, 12)
        return connected, reply.startswith(b"HTTP/1.1 ")

    try:
        async with asyncio.timeout(120):
            done = await asyncio.gather(*(one(s) for s in socks), return_exceptions=True)
        answered_at = time.perf_counter()
    finally:
        for sock in socks:
            sock.close()
    ok = [d for d in done if isinstance(d, tuple)]
    return Burst(
        connections=count,
        dropped_syns=listen_drops() - before,
        connect_all_s=max((c for c, _ in ok), default=started) - started,
        answer_all_s=answered_at - started,
        answered=sum(answered for _, answered in ok),
    )


class _Idle(asyncio.Protocol):
    def __init__(self) -> None:
        self.answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.open = True
        cast(asyncio.Transport, transport).write(_REQUEST)

    def data_received(self, data: bytes) -> None:
        if not self.answered.done():
            self.answered.set_result(data.startswith(b"HTTP/1.1 200"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.answered.done():
            self.answered.set_result(False)


@dataclass(frozen=True)
class Held:
    wanted: int
    opened: int  # connected and answered 200
    open_after_hold: int
    hold_s: float
    open_s: float  # time to open them all
    errors: dict[str, int]


class IdleConnections:
    """``async with IdleConnections(...) as held:`` the connections stay open inside the block."""

    def __init__(self, host: str, port: int, count: int, batch: int = 250) -> None:
        self.host, self.port, self.count, self.batch = host, port, count, batch
        self._transports: list[asyncio.BaseTransport] = []
        self._protocols: list[_Idle] = []
        self.errors: dict[str, int] = {}
        self.opened = 0
        self.open_s = 0.0

    async def __aenter__(self) -> IdleConnections:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for first in range(0, self.count, self.batch):
            size = min(self.batch, self.count - first)
            made = await asyncio.gather(
                *(loop.create_connection(_Idle, self.host, self.port) for _ in range(size)),
                return_exceptions=True,
            )
            batch = []
            for item in made:
                if isinstance(item, BaseException):
                    name = type(item).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                    continue
                transport, protocol = item
                self._transports.append(transport)
                batch.append(protocol)
            self._protocols += batch
            # Answered before the next batch, so the accept queue never holds more than one.
            async with asyncio.timeout(60):
                answers = await asyncio.gather(*(p.answered for p in batch))
            self.opened += sum(answers)
        self.open_s = time.perf_counter() - started
        return self

    def still_open(self) -> int:
        return sum(p.open for p in self._protocols)

    async def __aexit__(self, *exc: object) -> None:
        for transport in self._transports:
            transport.close()
        await asyncio.sleep(0.1)  # let the closes go out before the next phase


async def hold_idle(host: str, port: int, count: int, hold: float) -> Held:
    async with IdleConnections(host, port, count) as held:
        await asyncio.sleep(hold)
        return Held(count, held.opened, held.still_open(), hold, held.open_s, held.errors)
