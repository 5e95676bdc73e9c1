"""A real CNCF Distribution registry (Debian's ``docker-registry``) running as a subprocess."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .httpclient import http_get
from .process import ServerProcess, ServerProcessError

HARNESS_USER_AGENT = "regcache-test-harness"

# Distribution 2.8 logs one line per request through gorilla/handlers' combined log format:
#   127.0.0.1 - - [27/Nov/2026:18:35:05 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
# interleaved with logrus ``time=... level=...`` lines, which the ``^\S+ \S+ \S+ \[`` prefix skips.
_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+) (?P<proto>[^"]+)" '
    r"(?P<status>\d{3}) (?P<size>\d+|-) "
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"'
)


class RegistryError(ServerProcessError):
    pass


@dataclass(frozen=True)
class TokenAuthSettings:
    """Distribution's ``auth.token`` section."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class AccessLogEntry:
    method: str
    path: str  # without the query string
    status: int
    query: str = ""
    size: int = 0
    user_agent: str = ""


def registry_binary() -> str:
    path = shutil.which("docker-registry")
    if path is None:
        raise RuntimeError(
            "docker-registry (CNCF Distribution) is not installed; the integration tests need "
            "it (apt-get install docker-registry)"
        )
    return path


def parse_access_log(text: str) -> list[AccessLogEntry]:
    """Every access-log line of ``text``, including the harness's own probes."""
    entries = []
    for line in text.splitlines():
        m = _ACCESS_LINE.match(line)
        if m is None:
            continue
        path, _, query = m["target"].partition("?")
        entries.append(
            AccessLogEntry(
                method=m["method"],
                path=path,
                status=int(m["status"]),
                query=query,
                size=0 if m["size"] == "-" else int(m["size"]),
                user_agent=m["agent"],
            )
        )
    return entries


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd line; Distribution's htpasswd backend accepts nothing but bcrypt."""
    tool = shutil.which("htpasswd")
    if tool is not None:
        # Cost 4 is the minimum: the registry checks the hash on every request.
        out = subprocess.run(
            [tool, "-nbBC", "4", user, password],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip()
    hashed = _libcrypt_bcrypt(password)
    if hashed is None:
        raise RuntimeError(
            "cannot make a bcrypt htpasswd entry: install apache2-utils (for `htpasswd`) "
            "or a libcrypt with bcrypt support"
        )
    return f"{user}:{hashed}"


def _libcrypt_bcrypt(password: str) -> str | None:
    """bcrypt through libxcrypt (Debian's libcrypt1), for machines without apache2-utils."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    # The 22nd salt character only carries 2 bits; these are the canonical choices.
    salt = "".join(secrets.choice(alphabet) for _ in range(21)) + secrets.choice(".Oeu")
    result = lib.crypt(password.encode(), f"$2b$04${salt}".encode())
    if not result or not result.startswith(b"$2b$"):
        return None
    return str(result.decode())


class Registry(ServerProcess):
    """``docker-registry serve`` on 127.0.0.1, restartable on the same port and storage.

    The access log survives restarts (the log file is appended to), so marks stay valid.
    """

    label = "docker-registry"
    error_type = RegistryError

    def __init__(
        self,
        storage_dir: Path | None = None,
        *,
        work_dir: Path | None = None,
        port: int | None = None,
        htpasswd: tuple[str, str] | None = None,
        token_auth: TokenAuthSettings | None = None,
        proxy_remote: str | None = None,
        proxy_username: str | None = None,
        proxy_password: str | None = None,
        log_level: str = "info",
        startup_timeout: float = 15.0,
    ) -> None:
        if htpasswd is not None and token_auth is not None:
            raise ValueError("Distribution accepts one auth method: htpasswd or token_auth")
        super().__init__(
            work_dir=work_dir, port=port, startup_timeout=startup_timeout, log_name="registry.log"
        )
        self.storage_dir = Path(storage_dir or self.work_dir / "storage")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.htpasswd = htpasswd
        self.token_auth = token_auth
        self.proxy_remote = proxy_remote
        self.config_path = self.work_dir / "config.yml"
        self._sync_counter = itertools.count()
        self.config = self._build_config(log_level, proxy_username, proxy_password)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _build_config(
        self, log_level: str, proxy_username: str | None, proxy_password: str | None
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": log_level, "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                # A purge pass racing a test's upload would make failures unreproducible.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{self.port}",
                # Fixed so upload sessions stay valid across a restart of the same registry.
                "secret": "regcache-test-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.htpasswd is not None:
            htpasswd_path = self.work_dir / "htpasswd"
            htpasswd_path.write_text(htpasswd_line(*self.htpasswd) + "\n")
            config["auth"] = {"htpasswd": {"realm": "regcache-test", "path": str(htpasswd_path)}}
        if self.token_auth is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token_auth.realm,
                    "service": self.token_auth.service,
                    "issuer": self.token_auth.issuer,
                    "rootcertbundle": str(self.token_auth.rootcertbundle),
                }
            }
        if self.proxy_remote is not None:
            proxy: dict[str, str] = {"remoteurl": self.proxy_remote}
            if proxy_username is not None:
                proxy["username"] = proxy_username
                proxy["password"] = proxy_password or ""
            config["proxy"] = proxy
        return config

    def argv(self) -> list[str]:
        return [registry_binary(), "serve", str(self.config_path)]

    def env(self) -> dict[str, str]:
        # Distribution lets REGISTRY_* variables override the config file; a stray one from the
        # environment would silently change the listen address or the storage.
        return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}

    def ready(self) -> bool:
        return self._probe() in (200, 401)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """An outage for the duration of the block; the registry comes back afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _probe(self, tag: str = "") -> int | None:
        path = "/v2/" + (f"?harness-sync={tag}" if tag else "")
        try:
            resp = http_get(self.url + path, {"User-Agent": HARNESS_USER_AGENT}, timeout=2)
        except OSError:
            return None
        return resp.status

    def _sync_log(self, timeout: float = 5.0) -> None:
        """Make sure requests that completed before this call are in the log file.

        The registry writes a request's log line as its handler returns, which can be a moment
        after the client saw the response; a probe request and waiting for *its* line closes
        that gap.
        """
        if not self.running:
            return
        tag = f"{os.getpid()}-{next(self._sync_counter)}"
        if self._probe(tag) is None:
            return
        needle = f"harness-sync={tag} "
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if time.monotonic() > deadline:
                raise RegistryError(f"the access log of {self.url} stopped growing")
            time.sleep(0.01)

    def requests(self, since: int = 0, *, sync: bool = True) -> list[AccessLogEntry]:
        """Requests from the access log (the harness's own probes left out), from ``since``."""
        if sync:
            self._sync_log()
        entries = [
            e for e in parse_access_log(self.log_text()) if e.user_agent != HARNESS_USER_AGENT
        ]
        return entries[since:]

    def mark(self) -> int:
        """A position in the access log, for ``requests(since=...)`` and ``count(since=...)``."""
        return len(self.requests())

    def count(
        self,
        method: str | None,
        path_regex: str,
        since: int = 0,
        *,
        status: int | None = None,
    ) -> int:
        """Requests since ``since`` whose method matches and whose path fully matches."""
        pattern = re.compile(path_regex)
        return sum(
            1
            for e in self.requests(since)
            if (method is None or e.method == method)
            and (status is None or e.status == status)
            and pattern.fullmatch(e.path)
        )

    def blob_gets(self, digest: str | None = None, since: int = 0) -> int:
        """Successful ``GET`` blob downloads (of ``digest``, or of any blob)."""
        blob = re.escape(digest) if digest else r"sha256:[0-9a-f]{64}"
        return self.count("GET", rf"/v2/.+/blobs/{blob}", since, status=200)

    def __repr__(self) -> str:
        return f"Registry({self.url}, storage={self.storage_dir})"
