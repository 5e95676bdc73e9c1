"""The configuration model, immutable once loaded, which is also the settings table.

Every setting is declared once, here, on the field that holds its value: ``setting(...)``
gives its default, its parser, and, where it has them, its ``REGCACHE_*`` variable, its
``regcache serve`` flag and the help text for that flag. Adding a setting is adding a field:
the file, the environment, the command line and ``--help`` pick it up from there.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.config.access import AccessRule
from proxy.config.authfiles import (
    Htpasswd,
    TokenKey,
    parse_htpasswd,
    parse_secret_file,
    parse_token_key_file,
)
from proxy.config.declare import redact_url_password, secret_field, setting, upstream_option
from proxy.config.nodes import node_bool, node_choice, node_seconds, node_timeout
from proxy.config.parsers import (
    EVENT_LOOPS,
    LOG_LEVELS,
    Listen,
    parse_backlog,
    parse_bool,
    parse_cache_dir,
    parse_duration,
    parse_env_name,
    parse_event_loop,
    parse_file,
    parse_index_backend,
    parse_key_prefix,
    parse_listen,
    parse_log_format,
    parse_log_level,
    parse_nonempty,
    parse_redis_url,
    parse_size,
    parse_storage_backend,
    parse_url,
    parse_workers,
)
from proxy.config.prefetch import PrefetchRule
from proxy.logs import LOG_FORMATS

DEFAULT_TAG_TTL = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_PASSTHROUGH_TTL = 60.0
CONFIGURED = "configured"
PASSTHROUGH = "passthrough"

BUILTIN_UPSTREAMS: tuple[tuple[str, str], ...] = (
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("gcr.io", "https://gcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
)


@dataclass(frozen=True)
class UpstreamConfig:
    """One registry regcache proxies: an item of the file's ``upstreams:`` list.

    name, url, aliases, username and password follow rules of their own (required, unique
    across upstreams, one password source; see proxy.config.yamlfile). Every other field is an
    ``upstream_option``, set in the file by the key of the same name.
    """

    name: str
    url: str  # scheme://host[:port], no trailing slash
    aliases: tuple[str, ...] = ()
    username: str | None = None
    # Already resolved from password_file / password_env.
    password: str | None = secret_field(None)
    tag_ttl: float = upstream_option(DEFAULT_TAG_TTL, node_seconds)
    tls_verify: bool = upstream_option(True, node_bool)
    connect_timeout: float = upstream_option(DEFAULT_CONNECT_TIMEOUT, node_timeout)
    # Longest silence allowed while waiting for headers or between body bytes.
    read_timeout: float = upstream_option(DEFAULT_READ_TIMEOUT, node_timeout)
    # A 404 for a tag regcache has served before normally means it was deleted upstream;
    # some sites would rather keep serving the last known image.
    serve_stale_on_not_found: bool = upstream_option(False, node_bool)
    # Redirects to loopback, link-local or private addresses are refused unless the upstream
    # itself is in such a network (see proxy.upstream.redirects); a site whose public
    # registry stores blobs on a private network can opt in.
    allow_private_redirects: bool = upstream_option(False, node_bool)
    # "passthrough": each client's own credentials go upstream, and the upstream decides
    # what that client may read, cached or not (README, Security).
    credentials: str = upstream_option(CONFIGURED, node_choice(CONFIGURED, PASSTHROUGH))
    # How long the upstream's yes or no for a (client, repository) is taken as still true.
    passthrough_ttl: float = upstream_option(DEFAULT_PASSTHROUGH_TTL, node_seconds)

    @property
    def passthrough(self) -> bool:
        return self.credentials == PASSTHROUGH

    @property
    def is_docker_hub(self) -> bool:
        """One-component names get ``library/`` on Docker Hub, as Docker itself does."""
        return self.name == "docker.io"


def _choices(names: Sequence[str]) -> str:
    return "{" + ",".join(names) + "}"


@dataclass(frozen=True)
class Config:
    """Everything regcache runs with; each field declared with ``setting`` is one setting.

    Field order is the order in which errors list the file's keys and ``--help`` the flags.
    """

    listen: Listen = setting(
        Listen("0.0.0.0", 5000),
        parse_listen,
        env="REGCACHE_LISTEN",
        flag="--listen",
        metavar="HOST:PORT",
        help="address to listen on; use [ADDR]:PORT for IPv6",
    )
    # aiohttp's default of 128 drops SYNs when a fleet of nodes connects at once; the kernel
    # caps it at net.core.somaxconn (README, Operations).
    listen_backlog: int = setting(
        4096,
        parse_backlog,
        env="REGCACHE_LISTEN_BACKLOG",
        flag="--listen-backlog",
        metavar="N",
        help="connections the kernel queues before regcache accepts them; at most "
        "net.core.somaxconn",
    )
    workers: int | None = setting(  # None: one per CPU, counted at start (server.workers)
        None,
        parse_workers,
        env="REGCACHE_WORKERS",
        flag="--workers",
        metavar="N",
        help="processes serving the port, one cache between them (default: one per CPU)",
    )
    cache_dir: Path = setting(
        Path("regcache-cache"),
        parse_cache_dir,
        env="REGCACHE_CACHE_DIR",
        flag="--cache-dir",
        metavar="DIR",
        help="directory for cached blobs and manifests; a relative path is relative to the "
        "working directory",
    )
    default_upstream: str = setting(
        "docker.io",
        parse_nonempty,
        env="REGCACHE_DEFAULT_UPSTREAM",
        flag="--default-upstream",
        metavar="NAME",
        help="upstream (name or alias) for requests that name none",
    )
    log_level: str = setting(
        "info",
        parse_log_level,
        env="REGCACHE_LOG_LEVEL",
        flag="--log-level",
        metavar=_choices(LOG_LEVELS),
        help="logging threshold; logs go to stderr",
    )
    log_format: str = setting(
        "text",
        parse_log_format,
        env="REGCACHE_LOG_FORMAT",
        flag="--log-format",
        metavar=_choices(LOG_FORMATS),
        help="text for people; json for log pipelines: one object per line, with one access "
        "record per request (upstream, repository, cache result, bytes, duration)",
    )
    # asyncio's own loop by default: uvloop has no sendfile, and serving cached blobs
    # without it costs more than uvloop saves elsewhere (see the README's benchmarks).
    event_loop: str = setting(
        "asyncio",
        parse_event_loop,
        env="REGCACHE_EVENT_LOOP",
        help=f"one of {', '.join(EVENT_LOOPS)}; auto is uvloop when it is installed (the "
        "`uvloop` extra), else asyncio's loop",
    )
    offline: bool = setting(
        False,
        parse_bool,
        env="REGCACHE_OFFLINE",
        flag="--offline",
        help="never contact an upstream: serve what is cached and answer 404 for anything "
        "else, e.g. at an air-gapped site",
    )
    cache_max_size: int | None = setting(
        None,
        parse_size,
        section="cache",
        help="LRU bound on the bytes of cached blobs and manifests; empty for no bound",
    )
    cache_max_age: float | None = setting(
        None,
        parse_duration,
        section="cache",
        help="content not served for this long is evicted; empty to keep it",
    )
    # Client authentication is on when, and only when, an htpasswd file is given.
    auth_htpasswd: Htpasswd | None = setting(
        None,
        parse_htpasswd,
        section="auth",
        help="htpasswd file of bcrypt entries (htpasswd -B); setting it turns logins on",
    )
    auth_anonymous: bool = setting(
        False,
        parse_bool,
        section="auth",
        help="requests without credentials act as the user anonymous",
    )
    auth_token_ttl: float = setting(
        300.0,
        parse_duration,
        section="auth",
        help="how long a bearer token issued by regcache's /token lives",
    )
    auth_token_key_file: TokenKey | None = setting(
        None,
        parse_token_key_file,
        section="auth",
        help="the key that signs tokens (32+ bytes); random at each start when unset, so "
        "replicas behind one address must share a file",
    )
    # Where tags, manifests, usage records and pins live: the cache directory, or a Redis
    # several replicas share (README, Scaling out).
    index_backend: str = setting(
        "local",
        parse_index_backend,
        section="index",
        env="REGCACHE_INDEX_BACKEND",
        help="local keeps the index in the cache directory; redis in index.redis.url",
    )
    # A password may be in the URL: shown without it.
    index_redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        parse_redis_url,
        section="index.redis",
        env="REGCACHE_INDEX_REDIS_URL",
        help="the Redis of index.backend redis: redis://[:PASSWORD@]HOST[:PORT][/DB], "
        "rediss:// for TLS, unix://PATH, or redis+sentinel://HOST:PORT[,...]/SERVICE[/DB]",
        secret=True,
        redact=redact_url_password,
    )
    index_redis_prefix: str = setting(
        "regcache:",
        parse_nonempty,
        section="index.redis",
        env="REGCACHE_INDEX_REDIS_PREFIX",
        help="the start of every key, so that caches sharing one Redis keep apart",
    )
    # Not a setting: the file's access: list; None means the default rule (README, Security).
    access: tuple[AccessRule, ...] | None = None
    # HTTPS on the listen address when both are set; re-read on SIGHUP (proxy.server.tls).
    tls_cert_file: Path | None = setting(
        None,
        parse_file,
        section="tls",
        env="REGCACHE_TLS_CERT_FILE",
        help="PEM certificate chain, the server's certificate first; with tls.key_file, "
        "regcache serves HTTPS only",
    )
    tls_key_file: Path | None = setting(
        None,
        parse_file,
        section="tls",
        env="REGCACHE_TLS_KEY_FILE",
        help="PEM private key of tls.cert_file, without a passphrase",
    )
    tls_client_ca_file: Path | None = setting(
        None,
        parse_file,
        section="tls",
        env="REGCACHE_TLS_CLIENT_CA_FILE",
        help="PEM CA certificates; when set, clients must present a certificate one of them "
        "signed (mutual TLS)",
    )
    storage_backend: str = setting(
        "local",
        parse_storage_backend,
        section="storage",
        help="where blobs live: local (under cache_dir) or s3 (a bucket, storage.s3)",
    )
    storage_s3_endpoint: str | None = setting(
        None,
        parse_url,
        section="storage.s3",
        help="the S3 server, scheme://host[:port]; empty for AWS",
    )
    storage_s3_bucket: str | None = setting(
        None, parse_nonempty, section="storage.s3", help="the bucket; needed with backend s3"
    )
    storage_s3_region: str | None = setting(
        None, parse_nonempty, section="storage.s3", help="the bucket's region"
    )
    storage_s3_prefix: str | None = setting(
        None, parse_key_prefix, section="storage.s3", help="a folder for every key, e.g. cache/"
    )
    # The keys come from a file or a variable, or from the standard AWS chain when neither.
    storage_s3_access_key_id_file: str | None = setting(
        None, parse_secret_file, section="storage.s3", help="file holding the key id", secret=True
    )
    storage_s3_access_key_id_env: str | None = setting(
        None, parse_env_name, section="storage.s3", help="variable holding the key id"
    )
    storage_s3_secret_access_key_file: str | None = setting(
        None, parse_secret_file, section="storage.s3", help="file holding the key", secret=True
    )
    storage_s3_secret_access_key_env: str | None = setting(
        None, parse_env_name, section="storage.s3", help="variable holding the key"
    )
    storage_s3_redirect: bool = setting(
        False,
        parse_bool,
        section="storage.s3",
        help="answer cached blob GETs with a 307 to a presigned URL, so the bytes bypass regcache",
    )
    storage_local_tier: int | None = setting(
        None,
        parse_size,
        section="storage",
        env="REGCACHE_STORAGE_LOCAL_TIER",
        help="with backend s3: keep up to this many bytes of hot blobs on this replica's "
        "disk (cache_dir/tier), served from there with sendfile; empty for none",
    )
    # Several replicas sharing one Redis and one bucket (README, Scaling out).
    replica_name: str | None = setting(
        None,
        parse_nonempty,
        section="replica",
        env="REGCACHE_REPLICA_NAME",
        help="this replica's name in metrics, logs and leases; the host name when unset",
    )
    replica_advertise_url: str | None = setting(
        None,
        parse_url,
        section="replica",
        env="REGCACHE_REPLICA_ADVERTISE_URL",
        help="how the other replicas reach this one, e.g. http://10.0.0.5:5000, to follow "
        "the downloads it owns; needs index.backend redis and replica.secret_file",
    )
    replica_secret_file: TokenKey | None = setting(
        None,
        parse_token_key_file,
        section="replica",
        env="REGCACHE_REPLICA_SECRET_FILE",
        help="the key (32+ bytes) replicas sign their requests to each other with; the same "
        "file on every replica",
    )
    # Not settings: the S3 keys, resolved from the _file or _env settings above.
    storage_s3_access_key_id: str | None = secret_field(None)
    storage_s3_secret_access_key: str | None = secret_field(None)
    # Not a setting: the file's prefetch: list (proxy.config.prefetch).
    prefetch: tuple[PrefetchRule, ...] = ()
    # Not a setting: the file's upstreams: list replaces it and --upstream edits it.
    upstreams: tuple[UpstreamConfig, ...] = tuple(
        UpstreamConfig(name=n, url=u) for n, u in BUILTIN_UPSTREAMS
    )

    @property
    def listen_host(self) -> str:
        return self.listen.host

    @property
    def listen_port(self) -> int:
        return self.listen.port

    @property
    def replica(self) -> str:
        """This replica's name: ``replica.name``, or the host name (the pod's, in Kubernetes)."""
        return self.replica_name or socket.gethostname()

    @property
    def auth_enabled(self) -> bool:
        return self.auth_htpasswd is not None

    @property
    def logins_needed(self) -> bool:
        """Whether clients may log in at all: to regcache, or to a passthrough upstream."""
        return self.auth_enabled or any(up.passthrough for up in self.upstreams)

    def upstream(self, name: str) -> UpstreamConfig | None:
        for up in self.upstreams:
            if up.name == name or name in up.aliases:
                return up
        return None
