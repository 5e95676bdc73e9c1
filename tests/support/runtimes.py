"""What the container-runtime drivers share: running their CLIs, daemons that answer on a unix
socket, the config snippets the README shows, and regcache's access log.

The drivers themselves live in ``containerd.py``, ``dockerd.py``, ``podman.py`` and ``helm.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from .httpclient import http_request
from .images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from .process import ServerProcess, ServerProcessError
from .regcache import RegcacheProcess

# The regcache address the README's snippets use; the tests render the same templates with the
# address of the regcache they started.
README_REGCACHE = "regcache.example.com:5000"
README_PATH = Path(__file__).resolve().parents[2] / "README.md"

HARNESS_USER_AGENT = "regcache-test-harness"
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class CommandError(RuntimeError):
    """A runtime's command failed; the message carries the command line and its output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        status = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(f"{' '.join(argv)} {status}:\n{output.strip()[-6000:]}")


def render(template: str, **values: str) -> str:
    """A snippet with its ``$names`` filled in (``string.Template``: JSON's braces are safe)."""
    return Template(template).substitute(values)


def readme_text() -> str:
    return README_PATH.read_text()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without proxy settings: everything here talks to 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cwd: Path | None = None,
    with_stderr: bool = False,
) -> str:
    """Run a command to completion and return its stdout (then its stderr, ``with_stderr``);
    failures raise :class:`CommandError`."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(argv, None, out + err) from exc
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout + proc.stderr)
    return proc.stdout + proc.stderr if with_stderr else proc.stdout


def require_binary(name: str, package: str) -> str:
    # Daemons live in /usr/sbin, which a non-login root shell may not have on PATH.
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; the runtimes tests need it (apt-get install {package}, "
            "or run scripts/test.sh as root)"
        )
    return path


def short_tmpdir(label: str) -> Path:
    """A directory under /tmp with a short path: unix socket paths are limited to 107 bytes,
    and pytest's base temp directory may be long."""
    return Path(tempfile.mkdtemp(prefix=f"rc-{label}-", dir="/tmp"))


def unix_socket_accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def unix_http_get(path: Path, url_path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A bare HTTP/1.0 GET over a unix socket (dockerd's API), for readiness probes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"GET {url_path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


class SocketDaemon(ServerProcess):
    """A daemon that serves on a unix socket rather than on a TCP port.

    Its work directory defaults to a short one under /tmp (see :func:`short_tmpdir`), removed by
    :meth:`close`.
    """

    label = "daemon"
    error_type: type[RuntimeError] = ServerProcessError

    def __init__(self, *, work_dir: Path | None, startup_timeout: float, log_name: str) -> None:
        own = work_dir is None
        super().__init__(
            work_dir=work_dir or short_tmpdir(self.label),
            port=None,
            startup_timeout=startup_timeout,
            log_name=log_name,
        )
        self._own_work_dir = own

    def env(self) -> dict[str, str]:
        return clean_env()


def registry_digest(base_url: str, repository: str, reference: str) -> str:
    """What a registry says ``repository:reference`` is: its ``Docker-Content-Digest``."""
    accept = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
    url = f"{base_url}/v2/{repository}/manifests/{reference}"
    response = http_request("HEAD", url, {"Accept": accept})
    if response.status != 200:
        raise AssertionError(f"HEAD {url} answered {response.status}")
    return str(response.headers["Docker-Content-Digest"])


# -- regcache's access log ---------------------------------------------------------------------

# With ``log_format: json`` regcache writes one JSON object per access, logger "regcache.access",
# with the request's method, path (query included), status and User-Agent; the text format
# leaves the User-Agent out, and that is what tells the runtimes apart.
JSON_LOGS: Mapping[str, str] = {"log_format": "json"}
ACCESS_LOGGER = "regcache.access"
_sync_counter = itertools.count()


def with_json_logs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A regcache config whose access log :func:`regcache_requests` can read."""
    return {**config, **JSON_LOGS}


@dataclass(frozen=True)
class Access:
    method: str
    path: str
    query: str
    status: int
    user_agent: str

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __str__(self) -> str:
        return f"{self.method} {self.target} -> {self.status}"


def parse_access_log(text: str) -> list[Access]:
    entries = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("logger") != ACCESS_LOGGER:
            continue
        path, _, query = str(record["path"]).partition("?")
        agent = record.get("user_agent") or ""
        entries.append(Access(record["method"], path, query, int(record["status"]), agent))
    return entries


def _sync_access_log(proxy: RegcacheProcess, timeout: float = 5.0) -> list[Access]:
    """Every access record, once those of requests answered before this call are in the log
    (see Registry._sync_log)."""
    tag = f"{os.getpid()}-{next(_sync_counter)}"
    proxy.get(f"/healthz?harness-sync={tag}", {"User-Agent": HARNESS_USER_AGENT})
    deadline = time.monotonic() + timeout
    while f"harness-sync={tag}" not in (text := proxy.log_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the access log of {proxy!r} stopped growing")
        time.sleep(0.01)
    entries = parse_access_log(text)
    if not any(e.query == f"harness-sync={tag}" for e in entries):
        raise AssertionError(f"{proxy!r} does not log JSON: start it with with_json_logs()")
    return entries


def regcache_requests(
    proxy: RegcacheProcess, since: int = 0, agent: str | None = None
) -> list[Access]:
    """Requests regcache answered since ``since`` (a :func:`access_mark`), the harness's own left
    out; with ``agent``, only those whose User-Agent contains it. The proxy must have been
    started with :func:`with_json_logs`."""
    entries = [
        e
        for e in _sync_access_log(proxy)
        # The harness's own probes, and the tests' /metrics reads through urllib.
        if e.user_agent != HARNESS_USER_AGENT and not e.user_agent.startswith("Python-urllib/")
    ][since:]
    if agent is not None:
        entries = [e for e in entries if agent in e.user_agent]
    return entries


def access_mark(proxy: RegcacheProcess) -> int:
    return len(regcache_requests(proxy))


def v2_requests(entries: Iterable[Access]) -> list[str]:
    """``METHOD target`` of each distribution-API request, for assertions and for the record."""
    return [f"{e.method} {e.target}" for e in entries if e.path.startswith("/v2")]
