"""Configuration: parsed once into immutable objects.

Precedence, lowest first: embedded defaults < YAML file < ``REGCACHE_<KEY>`` environment
variables (top-level keys) < command-line flags.

The YAML file is read as a node tree (``yaml.compose``) rather than as Python objects so that
every error can name the line it comes from, and so that string settings keep exactly the
characters the operator typed (YAML 1.1 would otherwise turn ``password: 0123`` into 83).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.logs import LOG_FORMATS

DEFAULT_TAG_TTL = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0

BUILTIN_UPSTREAMS: tuple[tuple[str, str], ...] = (
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("gcr.io", "https://gcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
)

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
EVENT_LOOPS: tuple[str, ...] = ("auto", "asyncio", "uvloop")

# Environment variable -> the top-level key it overrides.
ENV_VARS: Mapping[str, str] = {
    "REGCACHE_LISTEN": "listen",
    "REGCACHE_CACHE_DIR": "cache_dir",
    "REGCACHE_DEFAULT_UPSTREAM": "default_upstream",
    "REGCACHE_LOG_LEVEL": "log_level",
    "REGCACHE_LOG_FORMAT": "log_format",
    "REGCACHE_EVENT_LOOP": "event_loop",
    "REGCACHE_OFFLINE": "offline",
}

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "listen",
    "cache_dir",
    "default_upstream",
    "log_level",
    "log_format",
    "event_loop",
    "offline",
    "cache",
    "upstreams",
)
CACHE_KEYS: tuple[str, ...] = ("max_size", "max_age")
UPSTREAM_KEYS: tuple[str, ...] = (
    "name",
    "url",
    "aliases",
    "username",
    "password",
    "password_file",
    "password_env",
    "tag_ttl",
    "tls_verify",
    "connect_timeout",
    "read_timeout",
    "serve_stale_on_not_found",
)
_PASSWORD_KEYS = ("password", "password_file", "password_env")


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str  # scheme://host[:port], no trailing slash
    aliases: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None  # already resolved from password_file / password_env
    tag_ttl: float = DEFAULT_TAG_TTL
    tls_verify: bool = True
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    # Longest silence allowed while waiting for headers or between body bytes.
    read_timeout: float = DEFAULT_READ_TIMEOUT
    # A 404 for a tag regcache has served before normally means it was deleted upstream;
    # some sites would rather keep serving the last known image.
    serve_stale_on_not_found: bool = False

    @property
    def is_docker_hub(self) -> bool:
        """One-component names get ``library/`` on Docker Hub, as Docker itself does."""
        return self.name == "docker.io"


@dataclass(frozen=True)
class Config:
    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    cache_dir: Path = field(default_factory=lambda: Path("regcache-cache"))
    default_upstream: str = "docker.io"
    upstreams: tuple[UpstreamConfig, ...] = tuple(
        UpstreamConfig(name=n, url=u) for n, u in BUILTIN_UPSTREAMS
    )
    log_level: str = "info"
    # text for people; json for log pipelines (one object per line, access records included)
    log_format: str = "text"
    # asyncio's own loop by default: uvloop has no sendfile, and serving cached blobs
    # without it costs more than uvloop saves elsewhere (see the README's benchmarks).
    # auto: uvloop when it is installed (the `uvloop` extra), else asyncio's loop.
    event_loop: str = "asyncio"
    # Never contact an upstream: serve what is cached, 404 for the rest.
    offline: bool = False
    # LRU bound on the bytes of cached blobs and manifests; None for no bound.
    cache_max_size: int | None = None
    # Content not served for this many seconds is evicted; None to keep it.
    cache_max_age: float | None = None

    def upstream(self, name: str) -> UpstreamConfig | None:
        for up in self.upstreams:
            if up.name == name or name in up.aliases:
                return up
        return None


class ConfigError(Exception):
    """A configuration problem, located precisely enough to fix without guessing.

    ``str(error)`` is e.g. ``config error: /etc/regcache.yaml line 7: upstreams[1].url: must be
    an http:// or https:// URL``.
    """

    def __init__(
        self, reason: str, *, source: str, line: int | None = None, key: str | None = None
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.key = key
        where = source if line is None else f"{source} line {line}"
        parts = ["config error", where, *([key] if key else []), reason]
        # Always one line: the CLI prints it as a single diagnostic and log collectors split
        # records on newlines.
        super().__init__(" ".join(": ".join(parts).splitlines()))


@dataclass(frozen=True)
class CliOverrides:
    """Command-line values, still as text: they are validated like every other source."""

    listen: str | None = None
    cache_dir: str | None = None
    upstreams: tuple[tuple[str, str], ...] = ()  # (name, url) pairs from --upstream NAME=URL
    default_upstream: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    offline: bool = False  # a flag can only turn it on


def load_config(path: Path | None, env: Mapping[str, str], overrides: CliOverrides) -> Config:
    """Merge defaults, the YAML file at ``path``, ``env`` and ``overrides``; raise ConfigError."""
    draft = _Draft.from_defaults()
    if path is not None:
        _FileReader(str(path), env).apply(draft, path)
    _apply_env(draft, env)
    _apply_overrides(draft, overrides)
    return draft.finish()


# --- merging ------------------------------------------------------------------------------

T = TypeVar("T")


class _Invalid(Exception):
    """A value is wrong; the caller knows where the value came from and adds that."""


@dataclass(frozen=True)
class _Origin:
    """Where a value came from, so that an error found later can still point at it."""

    source: str
    line: int | None = None

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=self.line, key=key)

    def check(self, key: str, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except _Invalid as exc:
            raise self.error(key, str(exc)) from None


_DEFAULTS = _Origin("built-in defaults")


@dataclass
class _Draft:
    """The configuration being assembled, one source at a time."""

    listen_host: str
    listen_port: int
    cache_dir: Path
    log_level: str
    log_format: str
    event_loop: str
    offline: bool
    cache_max_size: int | None
    cache_max_age: float | None
    default_upstream: str
    default_upstream_origin: _Origin
    upstreams: list[UpstreamConfig]
    upstreams_origin: _Origin

    @classmethod
    def from_defaults(cls) -> _Draft:
        base = Config()
        return cls(
            listen_host=base.listen_host,
            listen_port=base.listen_port,
            cache_dir=base.cache_dir,
            log_level=base.log_level,
            log_format=base.log_format,
            event_loop=base.event_loop,
            offline=base.offline,
            cache_max_size=base.cache_max_size,
            cache_max_age=base.cache_max_age,
            default_upstream=base.default_upstream,
            default_upstream_origin=_DEFAULTS,
            upstreams=list(base.upstreams),
            upstreams_origin=_DEFAULTS,
        )

    def apply(self, key: str, text: str, origin: _Origin) -> None:
        """Set one top-level scalar setting from its text form."""
        if key == "listen":
            self.listen_host, self.listen_port = origin.check(key, text, _parse_listen)
        elif key == "cache_dir":
            self.cache_dir = origin.check(key, text, _parse_cache_dir)
        elif key == "log_level":
            self.log_level = origin.check(key, text, _parse_log_level)
        elif key == "log_format":
            self.log_format = origin.check(key, text, _parse_log_format)
        elif key == "event_loop":
            self.event_loop = origin.check(key, text, _parse_event_loop)
        elif key == "offline":
            self.offline = origin.check(key, text, _parse_bool)
        elif key == "default_upstream":
            self.default_upstream = origin.check(key, text, _parse_nonempty)
            self.default_upstream_origin = origin
        else:  # pragma: no cover - callers only pass known keys
            raise AssertionError(key)

    def set_upstream_url(self, name: str, url: str) -> None:
        """Replace the URL of the upstream called ``name`` (or aliased so), else add one."""
        for index, upstream in enumerate(self.upstreams):
            if name == upstream.name or name in upstream.aliases:
                self.upstreams[index] = replace(upstream, url=url)
                return
        self.upstreams.append(UpstreamConfig(name=name, url=url))

    def finish(self) -> Config:
        return Config(
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            cache_dir=self.cache_dir,
            default_upstream=self._resolve_default(),
            upstreams=tuple(self.upstreams),
            log_level=self.log_level,
            log_format=self.log_format,
            event_loop=self.event_loop,
            offline=self.offline,
            cache_max_size=self.cache_max_size,
            cache_max_age=self.cache_max_age,
        )

    def _resolve_default(self) -> str:
        """The canonical name of the default upstream, so consumers can compare names."""
        wanted = self.default_upstream
        for upstream in self.upstreams:
            if wanted == upstream.name or wanted in upstream.aliases:
                return upstream.name
        labels = [label for up in self.upstreams for label in (up.name, *up.aliases)]
        known = ", ".join(labels)
        origin = self.default_upstream_origin
        if origin is _DEFAULTS:
            # The built-in default only breaks when the upstream list was replaced, so point
            # at that list.
            reason = f"the built-in default {wanted!r} is not among the upstreams listed here"
            reason += f"; set default_upstream to one of: {known}"
            raise self.upstreams_origin.error("default_upstream", reason)
        hint = _did_you_mean(wanted, labels)
        reason = f"{wanted!r} is not the name or alias of any upstream{hint}; known: {known}"
        raise origin.error("default_upstream", reason)


def _apply_env(draft: _Draft, env: Mapping[str, str]) -> None:
    for var, key in ENV_VARS.items():
        text = env.get(var)
        # Empty counts as unset: container tooling often writes VAR= to mean "no value".
        if text:
            draft.apply(key, text, _Origin(f"environment variable {var}"))


def _apply_overrides(draft: _Draft, overrides: CliOverrides) -> None:
    settings = {
        "listen": overrides.listen,
        "cache_dir": overrides.cache_dir,
        "default_upstream": overrides.default_upstream,
        "log_level": overrides.log_level,
        "log_format": overrides.log_format,
        "offline": "true" if overrides.offline else None,
    }
    for key, text in settings.items():
        if text is not None:
            draft.apply(key, str(text), _Origin(f"command line option --{key.replace('_', '-')}"))
    for name, url in overrides.upstreams:
        # The URL is deliberately not echoed: it may carry credentials.
        origin = _Origin(f"command line option --upstream {name}")
        draft.set_upstream_url(
            origin.check("name", name, _parse_name), origin.check("url", url, _parse_url)
        )


# --- value parsers: text in, value out, _Invalid on error -----------------------------------

# Upstream names are registry host names as clients send them in ?ns= and path prefixes.
# Lowercase only: a client sends "ghcr.io", so an upstream named "GHCR.io" would never match.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?(?::[0-9]{1,5})?")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def _parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host without brackets, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise _Invalid("must be HOST:PORT, e.g. 0.0.0.0:5000 or [::1]:5000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise _Invalid("an IPv6 host must be in brackets, e.g. [::1]:5000")
    elif not host:
        raise _Invalid("the host is missing; use 0.0.0.0:PORT to listen on every interface")
    elif not _HOST.fullmatch(host):
        raise _Invalid(f"{host!r} is not a valid host name or IPv4 address")
    return host, _parse_port(port_text)


def _parse_port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise _Invalid(f"port {text!r} must be a number from 1 to 65535")
    return int(text)


def _parse_name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise _Invalid(
            f"{text!r} is not a valid upstream name: use a lowercase registry host name such as "
            "docker.io or registry.example.com:5000 (letters, digits, '.', '-', '_')"
        )
    return text


def _parse_url(text: str) -> str:
    """Validate a registry base URL and return it as ``scheme://host[:port]``."""
    if any(char.isspace() for char in text):
        raise _Invalid("must not contain whitespace")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise _Invalid("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _Invalid("must not contain credentials; use username and password instead")
    try:
        port = parts.port
    except ValueError:
        raise _Invalid("has an invalid port") from None
    if not parts.hostname or port == 0:
        raise _Invalid("must name a host, e.g. https://registry.example.com")
    if parts.path.rstrip("/") or parts.query or parts.fragment:
        raise _Invalid(
            "must be just scheme://host[:port] with no path or query; /v2/ is added automatically"
        )
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _parse_nonempty(text: str) -> str:
    if not text:
        raise _Invalid("must not be empty")
    return text


def _parse_cache_dir(text: str) -> Path:
    if not text.strip():
        raise _Invalid("must not be empty")
    try:
        # Expanded because a literal "~" directory in the working directory is never wanted.
        return Path(text).expanduser()
    except RuntimeError as exc:
        raise _Invalid(str(exc)) from None


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _Invalid(f"{text!r} is not true or false")


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


def _parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise _Invalid(f"{text!r} is not a size such as 50GiB, 500MB or 1073741824")
    size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if size < 1:
        raise _Invalid("must be at least 1 byte")
    return int(size)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise _Invalid(f"{text!r} is not a duration such as 30d, 12h or 3600")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise _Invalid("must be longer than 0 seconds")
    return seconds


def _parse_log_format(text: str) -> str:
    log_format = text.lower()
    if log_format not in LOG_FORMATS:
        raise _Invalid(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
    return log_format


def _parse_event_loop(text: str) -> str:
    loop = text.lower()
    if loop not in EVENT_LOOPS:
        raise _Invalid(f"{text!r} is not one of {', '.join(EVENT_LOOPS)}")
    return loop


def _parse_log_level(text: str) -> str:
    level = text.lower()
    if level not in LOG_LEVELS:
        raise _Invalid(
            f"{text!r} is not one of {', '.join(LOG_LEVELS)}{_did_you_mean(level, LOG_LEVELS)}"
        )
    return level


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- the YAML file ------------------------------------------------------------------------

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_KINDS = {_NULL: "empty", _BOOL: "a boolean", _INT: "a number", _FLOAT: "a number"}
_CONSTRUCTOR = SafeConstructor()


class _Entry(NamedTuple):
    key: Node
    value: Node


class _Label(NamedTuple):
    """A name or alias, remembered with its position to report duplicates."""

    path: str
    text: str
    line: int


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _KINDS.get(node.tag, "a string")


def _node_text(node: Node) -> str:
    # The raw text, not the YAML 1.1 interpretation: "0123" or "yes" as a password is meant
    # literally.
    if not isinstance(node, ScalarNode) or node.tag == _NULL:
        raise _Invalid(f"must be a string, not {_kind(node)}")
    return str(node.value)


def _node_bool(node: Node) -> bool:
    if node.tag != _BOOL:
        raise _Invalid(f"must be true or false, not {_kind(node)}")
    return bool(_CONSTRUCTOR.construct_object(node))


def _node_seconds(node: Node) -> float:
    if node.tag not in (_INT, _FLOAT):
        raise _Invalid(f"must be a number of seconds, not {_kind(node)}")
    seconds = float(_CONSTRUCTOR.construct_object(node))
    if not math.isfinite(seconds) or seconds < 0:
        raise _Invalid("must be a finite number of seconds >= 0")
    return seconds


def _node_timeout(node: Node) -> float:
    seconds = _node_seconds(node)
    if seconds == 0:
        raise _Invalid("must be a number of seconds > 0")
    return seconds


def _node_list(node: Node) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise _Invalid(f"must be a list, not {_kind(node)}")
    return list(node.value)


def _compose(path: Path) -> Node | None:
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    try:
        return yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        reason = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
        raise ConfigError(reason, source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


class _FileReader:
    """Walks the node tree of one YAML file; every error carries that file's line numbers."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def error(self, node: Node, key: str | None, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=_line(node), key=key)

    def at(self, key: str, node: Node, convert: Callable[[Node], T]) -> T:
        try:
            return convert(node)
        except _Invalid as exc:
            raise self.error(node, key, str(exc)) from None

    def text(self, key: str, node: Node, parse: Callable[[str], T]) -> T:
        return self.at(key, node, lambda n: parse(_node_text(n)))

    def apply(self, draft: _Draft, path: Path) -> None:
        root = _compose(path)
        if root is None or _is_null(root):
            return  # an empty file (or only comments) means all defaults
        if not isinstance(root, MappingNode):
            raise self.error(root, None, f"the top level must be a mapping, not {_kind(root)}")
        for key, entry in self.fields(root, "", TOP_LEVEL_KEYS).items():
            if key == "upstreams":
                draft.upstreams = self.upstreams(entry.value)
                draft.upstreams_origin = _Origin(self.source, _line(entry.key))
            elif key == "cache":
                self.cache(draft, entry.value)
            else:
                text = self.at(key, entry.value, _node_text)
                draft.apply(key, text, _Origin(self.source, _line(entry.value)))

    def fields(self, node: MappingNode, prefix: str, allowed: Sequence[str]) -> dict[str, _Entry]:
        """Checked keys of a mapping; keys with an empty value are left out, as if absent."""
        found: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or _is_null(key_node):
                raise self.error(key_node, prefix or None, "keys must be plain strings")
            key = str(key_node.value)
            path = f"{prefix}.{key}" if prefix else key
            if key in found:
                first = _line(found[key].key)
                raise self.error(key_node, path, f"duplicate key (first given on line {first})")
            if key not in allowed:
                hint = _did_you_mean(key, allowed) or f"; expected one of: {', '.join(allowed)}"
                raise self.error(key_node, path, f"unknown key{hint}")
            found[key] = _Entry(key_node, value_node)
        return {key: entry for key, entry in found.items() if not _is_null(entry.value)}

    def cache(self, draft: _Draft, node: Node) -> None:
        if not isinstance(node, MappingNode):
            raise self.error(node, "cache", f"must be a mapping, not {_kind(node)}")
        fields = self.fields(node, "cache", CACHE_KEYS)
        if "max_size" in fields:
            draft.cache_max_size = self.text(
                "cache.max_size", fields["max_size"].value, _parse_size
            )
        if "max_age" in fields:
            draft.cache_max_age = self.text(
                "cache.max_age", fields["max_age"].value, _parse_duration
            )

    def upstreams(self, node: Node) -> list[UpstreamConfig]:
        items = self.at("upstreams", node, _node_list)
        if not items:
            raise self.error(node, "upstreams", "must list at least one upstream")
        claimed: dict[str, _Label] = {}
        result = []
        for index, item in enumerate(items):
            upstream, labels = self.upstream(item, f"upstreams[{index}]")
            for label in labels:
                self.claim(claimed, label)
            result.append(upstream)
        return result

    def claim(self, claimed: dict[str, _Label], label: _Label) -> None:
        """Reserve a name or alias; clients could not tell two upstreams apart otherwise."""
        first = claimed.setdefault(label.text, label)
        if first is not label:
            reason = (
                f"{label.text!r} is already used by {first.path} on line {first.line}; "
                "names and aliases must be unique"
            )
            raise ConfigError(reason, source=self.source, line=label.line, key=label.path)

    def upstream(self, node: Node, prefix: str) -> tuple[UpstreamConfig, list[_Label]]:
        if not isinstance(node, MappingNode):
            raise self.error(
                node, prefix, f"must be a mapping with name and url, not {_kind(node)}"
            )
        fields = self.fields(node, prefix, UPSTREAM_KEYS)
        for required in ("name", "url"):
            if required not in fields:
                raise self.error(node, prefix, f"the {required} key is missing")
        name_node = fields["name"].value
        name = self.text(f"{prefix}.name", name_node, _parse_name)
        url = self.text(f"{prefix}.url", fields["url"].value, _parse_url)
        aliases = self.aliases(fields, prefix)
        username, password = self.credentials(fields, prefix)
        upstream = UpstreamConfig(
            name=name,
            url=url,
            aliases=tuple(label.text for label in aliases),
            username=username,
            password=password,
            tag_ttl=self.optional(fields, prefix, "tag_ttl", _node_seconds, DEFAULT_TAG_TTL),
            tls_verify=self.optional(fields, prefix, "tls_verify", _node_bool, True),
            connect_timeout=self.optional(
                fields, prefix, "connect_timeout", _node_timeout, DEFAULT_CONNECT_TIMEOUT
            ),
            read_timeout=self.optional(
                fields, prefix, "read_timeout", _node_timeout, DEFAULT_READ_TIMEOUT
            ),
            serve_stale_on_not_found=self.optional(
                fields, prefix, "serve_stale_on_not_found", _node_bool, False
            ),
        )
        return upstream, [_Label(f"{prefix}.name", name, _line(name_node)), *aliases]

    def optional(
        self,
        fields: dict[str, _Entry],
        prefix: str,
        key: str,
        convert: Callable[[Node], T],
        default: T,
    ) -> T:
        entry = fields.get(key)
        return default if entry is None else self.at(f"{prefix}.{key}", entry.value, convert)

    def aliases(self, fields: dict[str, _Entry], prefix: str) -> list[_Label]:
        entry = fields.get("aliases")
        if entry is None:
            return []
        labels = []
        for index, item in enumerate(self.at(f"{prefix}.aliases", entry.value, _node_list)):
            path = f"{prefix}.aliases[{index}]"
            labels.append(_Label(path, self.text(path, item, _parse_name), _line(item)))
        return labels

    def credentials(self, fields: dict[str, _Entry], prefix: str) -> tuple[str | None, str | None]:
        given = sorted(
            (k for k in _PASSWORD_KEYS if k in fields), key=lambda k: _line(fields[k].key)
        )
        if len(given) > 1:
            first = fields[given[0]].key
            reason = (
                f"conflicts with {given[0]} on line {_line(first)}; "
                "give exactly one of password, password_file or password_env"
            )
            raise self.error(fields[given[1]].key, f"{prefix}.{given[1]}", reason)
        user_entry = fields.get("username")
        if user_entry is not None and not given:
            reason = "is set but there is no password, password_file or password_env"
            raise self.error(user_entry.key, f"{prefix}.username", reason)
        if user_entry is None and given:
            raise self.error(
                fields[given[0]].key, f"{prefix}.{given[0]}", "is set but username is not"
            )
        if user_entry is None:
            return None, None
        username = self.text(f"{prefix}.username", user_entry.value, _parse_nonempty)
        key = given[0]
        return username, self.text(f"{prefix}.{key}", fields[key].value, self.password_parser(key))

    def password_parser(self, key: str) -> Callable[[str], str]:
        if key == "password_file":
            return _read_password_file
        if key == "password_env":
            return self.read_password_env
        return _parse_nonempty

    def read_password_env(self, name: str) -> str:
        value = self.env.get(name)
        if value is None:
            raise _Invalid(f"environment variable {name!r} is not set")
        if not value:
            raise _Invalid(f"environment variable {name!r} is empty")
        return value


def _read_password_file(text: str) -> str:
    path = Path(_parse_nonempty(text)).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Invalid(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _Invalid(f"{str(path)!r} is not UTF-8 text") from None
    # Files written by `echo` or editors end with a newline that is not part of the secret.
    password = content.rstrip("\r\n")
    if not password:
        raise _Invalid(f"{str(path)!r} is empty")
    return password
