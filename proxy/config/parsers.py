"""Value parsers: a setting's text in, its value out, ``Invalid`` on error.

Every source (file, environment, command line) goes through the same parser, so a value means
the same wherever it is given. A parser does not know where its text came from; the caller
adds that to the error.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from proxy.logs import LOG_FORMATS

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
EVENT_LOOPS: tuple[str, ...] = ("auto", "asyncio", "uvloop")
INDEX_BACKENDS: tuple[str, ...] = ("local", "redis")


class Invalid(Exception):
    """A value is wrong; the caller knows where the value came from and adds that."""


class Listen(NamedTuple):
    """The address to listen on; ``str()`` gives it back in the form ``parse_listen`` reads."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# Upstream names are registry host names as clients send them in ?ns= and path prefixes.
# Lowercase only: a client sends "ghcr.io", so an upstream named "GHCR.io" would never match.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?(?::[0-9]{1,5})?")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host without brackets, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise Invalid("must be HOST:PORT, e.g. 0.0.0.0:5000 or [::1]:5000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise Invalid("an IPv6 host must be in brackets, e.g. [::1]:5000")
    elif not host:
        raise Invalid("the host is missing; use 0.0.0.0:PORT to listen on every interface")
    elif not _HOST.fullmatch(host):
        raise Invalid(f"{host!r} is not a valid host name or IPv4 address")
    return Listen(host, _parse_port(port_text))


def _parse_port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise Invalid(f"port {text!r} must be a number from 1 to 65535")
    return int(text)


def parse_name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise Invalid(
            f"{text!r} is not a valid upstream name: use a lowercase registry host name such as "
            "docker.io or registry.example.com:5000 (letters, digits, '.', '-', '_')"
        )
    return text


def parse_url(text: str) -> str:
    """Validate a registry base URL and return it as ``scheme://host[:port]``."""
    if any(char.isspace() for char in text):
        raise Invalid("must not contain whitespace")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise Invalid("must not contain credentials; use username and password instead")
    try:
        port = parts.port
    except ValueError:
        raise Invalid("has an invalid port") from None
    if not parts.hostname or port == 0:
        raise Invalid("must name a host, e.g. https://registry.example.com")
    if parts.path.rstrip("/") or parts.query or parts.fragment:
        raise Invalid(
            "must be just scheme://host[:port] with no path or query; /v2/ is added automatically"
        )
    return f"{parts.scheme.lower()}://{parts.netloc}"


# redis-py has no URL for Sentinel: this is the form Harbor reads (proxy.store.redisurl).
SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raise ValueError, saying what is wrong, for a URL not of the form above."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SENTINEL_SCHEME:
        raise ValueError(f"is not a {SENTINEL_SCHEME}:// URL")
    credentials, _, hostlist = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) if credentials else None
    hosts = []
    for entry in hostlist.split(","):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"names {entry!r}; each Sentinel must be HOST:PORT")
        hosts.append((host.strip("[]"), int(port)))
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("must end in /SERVICE or /SERVICE/DB, the master's name at the Sentinels")
    return SentinelUrl(tuple(hosts), path[0], int(path[1]) if len(path) == 2 else 0, password)


def parse_redis_url(text: str) -> str:
    """A URL redis-py opens: redis://, rediss:// (TLS) or unix://, perhaps with a password;
    or redis+sentinel://, the master some Sentinels know (proxy.store.redisurl)."""
    if any(char.isspace() for char in text):
        raise Invalid("must not contain whitespace")
    parts = urlsplit(text)
    if parts.scheme.lower() == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(text)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return text
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        raise Invalid(f"must be a redis://, rediss://, unix:// or {SENTINEL_SCHEME}:// URL")
    try:
        port = parts.port
    except ValueError:
        raise Invalid("has an invalid port") from None
    if port == 0:
        raise Invalid("has an invalid port")
    if "password" in parse_qs(parts.query):
        # Where redaction would not look for it.
        raise Invalid("give the password as redis://:PASSWORD@HOST, not as a query parameter")
    if parts.scheme.lower() == "unix" and not parts.path:
        raise Invalid("must name the socket, e.g. unix:///run/redis/redis.sock")
    return text


def parse_nonempty(text: str) -> str:
    if not text:
        raise Invalid("must not be empty")
    return text


def parse_path(text: str) -> Path:
    """A directory or file path; whether it can be used is checked where it is used."""
    if not text.strip():
        raise Invalid("must not be empty")
    try:
        # Expanded because a literal "~" directory in the working directory is never wanted.
        return Path(text).expanduser()
    except RuntimeError as exc:
        raise Invalid(str(exc)) from None


parse_cache_dir = parse_path
parse_file = parse_path


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise Invalid(f"{text!r} is not true or false")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_backlog(text: str) -> int:
    return _count(text, "connections", 65535)


def _count(text: str, what: str, most: int) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= most:
        raise Invalid(f"{text!r} is not a number of {what} from 1 to {most}")
    return int(text)


MAX_WORKERS = 1024


def parse_workers(text: str) -> int:
    return _count(text, "processes", MAX_WORKERS)


def parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise Invalid(f"{text!r} is not a size such as 50GiB, 500MB or 1073741824")
    size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if size < 1:
        raise Invalid("must be at least 1 byte")
    return int(size)


def human_size(size: int | None) -> str:
    """A size as people read it, in the binary units ``parse_size`` reads too."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise Invalid(f"{text!r} is not a duration such as 30d, 12h or 3600")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise Invalid("must be longer than 0 seconds")
    return seconds


def one_of(choices: Sequence[str], *, suggest: bool = False) -> Callable[[str], str]:
    """A parser for one of ``choices``, in any case; ``suggest`` adds the closest choice."""

    def parse(text: str) -> str:
        word = text.lower()
        if word not in choices:
            hint = did_you_mean(word, choices) if suggest else ""
            raise Invalid(f"{text!r} is not one of {', '.join(choices)}{hint}")
        return word

    return parse


STORAGE_BACKENDS = ("local", "s3")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_env_name(text: str) -> str:
    if not _ENV_NAME.fullmatch(text):
        raise Invalid(f"{text[:80]!r} is not an environment variable name")
    return text


def parse_key_prefix(text: str) -> str:
    """An object key prefix, as a folder: ``cache`` and ``cache/`` both give ``cache/``."""
    prefix = text.strip().strip("/")
    if not prefix:
        raise Invalid("must name a folder such as cache/; leave it empty for none")
    if any(char.isspace() or not char.isprintable() for char in prefix):
        raise Invalid("must not contain whitespace or control characters")
    return prefix + "/"


parse_storage_backend = one_of(STORAGE_BACKENDS)
parse_log_level = one_of(LOG_LEVELS, suggest=True)
parse_log_format = one_of(LOG_FORMATS)
parse_event_loop = one_of(EVENT_LOOPS)
parse_index_backend = one_of(INDEX_BACKENDS)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
