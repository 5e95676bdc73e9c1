"""A real Redis (Debian's ``redis-server``) running as a subprocess on 127.0.0.1.

Nothing is persisted (``--save ''``, no append-only file): a test's data lives as long as
the process. ``stop`` and ``start`` again keep the port, so a test can stage an outage and
see clients reconnect to the same URL, to an empty Redis.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from .process import ServerProcess, ServerProcessError


class RedisServerError(ServerProcessError):
    pass


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not installed; the Redis index tests need it "
            "(apt-get install redis-server)"
        )
    return path


class RedisServer(ServerProcess):
    label = "redis"
    error_type = RedisServerError

    def __init__(
        self,
        *,
        work_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            work_dir=work_dir, port=port, startup_timeout=startup_timeout, log_name="redis.log"
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.work_dir),
            # The harness owns the process: no daemonising, no pid file, no protected mode
            # (it only listens on loopback).
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        return self.ping()

    def ping(self) -> bool:
        """A raw RESP PING, so the harness needs no client library of its own."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class RedisSentinel(RedisServer):
    """A Redis Sentinel (``redis-server --sentinel``) watching ``master`` as ``service``."""

    label = "redis-sentinel"

    def __init__(self, master: RedisServer, service: str = "regcache", **kwargs: Any) -> None:
        self.master = master
        self.service = service
        super().__init__(**kwargs)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def before_start(self) -> None:
        # Sentinel rewrites its file as it learns the topology: one of its own, writable.
        (self.work_dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
        )

    def argv(self) -> list[str]:
        return [redis_binary(), str(self.work_dir / "sentinel.conf"), "--sentinel"]
