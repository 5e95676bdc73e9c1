"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import random
import socket
import threading

_lock = threading.Lock()
# Ports already handed out in this process: two fixtures racing for the same port fail in
# confusing ways.
_handed_out: set[int] = set()
# Below the kernel's ephemeral range (32768-60999 by default). A server a test stops and
# starts again on its port would otherwise find the port taken by an outgoing connection,
# even by a client's reconnect to that very port while it is down (a TCP self-connect).
PORTS = range(20000, 32768)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and not yet handed out by this process."""
    with _lock:
        for _ in range(200):
            port = random.choice(PORTS)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("could not find a free port on 127.0.0.1")
