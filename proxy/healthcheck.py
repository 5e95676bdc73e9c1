"""The container image's HEALTHCHECK: does the regcache in this container answer?

``python3 -m proxy.healthcheck``; exit status 0 when it does, 1 when not (the reasons on
stderr, which Docker keeps in the health log). The port follows ``REGCACHE_LISTEN`` when that
is set (as for ``docker run -e REGCACHE_LISTEN=0.0.0.0:8080``), else 5000. The check cannot know
whether TLS is on (the config file or a variable may turn it on), so it asks /healthz over plain
http first, the image's default, and then over https.

The https request verifies no certificate: it goes to the container's own loopback, where no one
can stand in for the server, and the certificate names the registry's public name, not
127.0.0.1. With mutual TLS this check has no client certificate, so regcache drops the connection
after the handshake; a completed handshake then counts as an answer, since regcache's event loop
made it. Only the standard library is imported: the check stays cheap and needs no curl.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from collections.abc import Mapping

DEFAULT_PORT = "5000"
LOOPBACK = "127.0.0.1"
TIMEOUT = 4.0  # each attempt; the Dockerfile's --timeout allows both


def port(environ: Mapping[str, str]) -> int:
    listen = environ.get("REGCACHE_LISTEN") or ""
    return int(listen.rpartition(":")[2] or DEFAULT_PORT)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ask(scheme: str, listen_port: int) -> str | None:
    """None when regcache answers on ``scheme``; else why not."""
    url = f"{scheme}://{LOOPBACK}:{listen_port}/healthz"
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(
            LOOPBACK, listen_port, timeout=TIMEOUT, context=_unverified()
        )
    else:
        conn = http.client.HTTPConnection(LOOPBACK, listen_port, timeout=TIMEOUT)
    try:
        conn.connect()  # for https, the handshake
    except OSError as exc:
        return f"{url}: {exc}"
    try:
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
    except (http.client.HTTPException, OSError) as exc:
        if scheme == "https" and isinstance(exc, http.client.RemoteDisconnected | ssl.SSLError):
            return None  # mutual TLS: the handshake was regcache's answer
        return f"{url}: {exc}"
    finally:
        conn.close()
    return None if response.status == 200 else f"{url}: answered {response.status}"


def main() -> int:
    listen_port = port(os.environ)
    problems = []
    for scheme in ("http", "https"):
        problem = ask(scheme, listen_port)
        if problem is None:
            return 0
        problems.append(problem)
    print("\n".join(problems), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
