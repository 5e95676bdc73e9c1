"""The listen backlog: a burst of connections is queued by the kernel, not dropped.

aiohttp's default backlog of 128 made a thousand clients connecting at once lose hundreds of
SYNs (issue 13). The kernel's own counters say whether any listen queue overflowed.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.support.regcache import RegcacheProcess

CLIENTS = 1000


def queue_limit(port: int) -> int:
    """The listening socket's backlog, as the kernel applies it (ss shows it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[2])


def listen_overflows() -> int:
    """TcpExt ListenOverflows: SYNs dropped, machine-wide, because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


def test_a_thousand_simultaneous_connections_are_all_queued(tmp_path: Path) -> None:
    server = RegcacheProcess({}, work_dir=tmp_path / "server")
    server.start()
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert queue_limit(server.port) == min(4096, somaxconn)
        before = listen_overflows()
        # Non-blocking connects, all sent before regcache accepts any of them.
        sockets = []
        for _ in range(CLIENTS):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.port))
            sockets.append(sock)
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(30)
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answered = sum(sock.recv(12).startswith(b"HTTP/1.1") for sock in sockets)
        for sock in sockets:
            sock.close()
        assert answered == CLIENTS
        assert listen_overflows() == before
    finally:
        server.stop()


def test_the_backlog_is_a_setting(tmp_path: Path) -> None:
    server = RegcacheProcess({"listen_backlog": 300}, work_dir=tmp_path / "server")
    server.start()
    try:
        assert queue_limit(server.port) == 300
    finally:
        server.stop()
