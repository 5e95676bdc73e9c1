"""Precedence, lowest first: built-in defaults < the YAML file < ``REGCACHE_*`` environment
variables < command-line flags; and the checks that need every source merged first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from proxy.config.access import AccessRule
from proxy.config.authfiles import secret_from_env
from proxy.config.declare import Setting
from proxy.config.errors import DEFAULTS, Origin
from proxy.config.model import Config, UpstreamConfig
from proxy.config.parsers import did_you_mean, parse_name, parse_url
from proxy.config.prefetch import PrefetchRule
from proxy.config.table import FLAG_SETTINGS, SETTINGS
from proxy.config.tls import TlsFileError, server_context
from proxy.config.yamlfile import FileSettings, read_file
from proxy.oci.imageref import parse_image

_TLS_FILES = ("cert_file", "key_file", "client_ca_file")
_S3_KEYS = ("access_key_id", "secret_access_key")
_FLAG_NAMES = frozenset(entry.name for entry in FLAG_SETTINGS)


# What regcache's tokens need, with logins to regcache or only to passthrough upstreams.
_TOKEN_SETTINGS = frozenset({"auth_token_key_file", "auth_token_ttl"})


class CliOverrides:
    """Command-line values, still as text: they are validated like every other source.

    Keyword arguments are the settings that have a flag, by model field name, e.g.
    ``log_level="debug"`` or ``offline=True`` for a switch; None or False leaves the setting
    alone. ``upstreams`` holds the (name, url) pairs of ``--upstream NAME=URL``.
    """

    def __init__(
        self, *, upstreams: Iterable[tuple[str, str]] = (), **values: str | bool | None
    ) -> None:
        unknown = sorted(set(values) - _FLAG_NAMES)
        if unknown:
            raise TypeError(f"no command-line flag sets {', '.join(unknown)}")
        self.upstreams = tuple(upstreams)
        self.values: Mapping[str, str] = {
            name: "true" if value is True else str(value)
            for name, value in values.items()
            if value is not None and value is not False
        }


def load_config(path: Path | None, env: Mapping[str, str], overrides: CliOverrides) -> Config:
    """Merge defaults, the YAML file at ``path``, ``env`` and ``overrides``; raise ConfigError."""
    draft = _Draft(env)
    if path is not None:
        draft.take_file(read_file(path, env))
    for entry in SETTINGS:
        # Empty counts as unset: container tooling often writes VAR= to mean "no value".
        if entry.env and env.get(entry.env):
            draft.parse(entry, env[entry.env], Origin(f"environment variable {entry.env}"))
    for entry in FLAG_SETTINGS:
        if entry.name in overrides.values:
            origin = Origin(f"command line option {entry.flag}")
            draft.parse(entry, overrides.values[entry.name], origin)
    for name, url in overrides.upstreams:
        # The URL is deliberately not echoed: it may carry credentials.
        origin = Origin(f"command line option --upstream {name}")
        draft.set_upstream_url(
            origin.check("name", name, parse_name), origin.check("url", url, parse_url)
        )
    return draft.finish()


class _Draft:
    """The configuration being assembled, one source at a time."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.values: dict[str, Any] = {entry.name: entry.default for entry in SETTINGS}
        self.origins: dict[str, Origin] = {entry.name: DEFAULTS for entry in SETTINGS}
        self.upstreams = list(Config().upstreams)
        self.upstreams_origin = DEFAULTS
        self.access: tuple[AccessRule, ...] | None = None
        self.access_origin = DEFAULTS
        self.prefetch: tuple[PrefetchRule, ...] = ()
        self.prefetch_origin = DEFAULTS

    def set(self, setting: Setting[Any], value: Any, origin: Origin) -> None:
        self.values[setting.name] = value
        self.origins[setting.name] = origin

    def parse(self, setting: Setting[Any], text: str, origin: Origin) -> None:
        self.set(setting, origin.check(setting.key, text, setting.parse), origin)

    def take_file(self, found: FileSettings) -> None:
        for assigned in found.values:
            self.set(*assigned)
        if found.upstreams is not None:
            self.upstreams, self.upstreams_origin = found.upstreams
        if found.access is not None and found.access_origin is not None:
            self.access, self.access_origin = found.access, found.access_origin
        if found.prefetch is not None and found.prefetch_origin is not None:
            self.prefetch, self.prefetch_origin = found.prefetch, found.prefetch_origin

    def set_upstream_url(self, name: str, url: str) -> None:
        """Replace the URL of the upstream called ``name`` (or aliased so), else add one."""
        for index, upstream in enumerate(self.upstreams):
            if name == upstream.name or name in upstream.aliases:
                self.upstreams[index] = replace(upstream, url=url)
                return
        self.upstreams.append(UpstreamConfig(name=name, url=url))

    def finish(self) -> Config:
        values = {**self.values, "default_upstream": self._resolve_default()}
        values.update(self._s3_keys())
        self._check_storage()
        self._check_replica()
        self._check_auth()
        self._check_tls()
        self._check_prefetch()
        return Config(
            **values, upstreams=tuple(self.upstreams), access=self.access, prefetch=self.prefetch
        )

    def _s3_keys(self) -> dict[str, str | None]:
        """The S3 key id and key, each from its file or its variable; both or neither."""
        found = {name: self._s3_key(name) for name in _S3_KEYS}
        given = [key for _, key in found.values() if key is not None]
        if len(given) == 1:
            key = given[0]
            missing = next(name for name, (value, _) in found.items() if value is None)
            reason = (
                f"is set but storage.s3.{missing}_file or _env is not; give both, or neither "
                "for the standard AWS credential chain"
            )
            raise self.origins[key.replace(".", "_")].error(key, reason)
        return {f"storage_s3_{name}": value for name, (value, _) in found.items()}

    def _s3_key(self, name: str) -> tuple[str | None, str | None]:
        """One S3 key, and the key of the file that gave it, if any."""
        file_key, env_key = f"storage.s3.{name}_file", f"storage.s3.{name}_env"
        from_file = self.values[file_key.replace(".", "_")]
        variable = self.values[env_key.replace(".", "_")]
        env_origin = self.origins[env_key.replace(".", "_")]
        if from_file is not None and variable is not None:
            raise env_origin.error(env_key, f"conflicts with {file_key}; give one of them")
        if variable is not None:
            return env_origin.check(env_key, variable, self._from_env), env_key
        return from_file, file_key if from_file is not None else None

    def _from_env(self, variable: str) -> str:
        return secret_from_env(self.env, variable)

    def _check_storage(self) -> None:
        if self.values["storage_s3_redirect"] and self.values["storage_backend"] != "s3":
            reason = "redirects to presigned URLs need storage.backend: s3"
            raise self.origins["storage_s3_redirect"].error("storage.s3.redirect", reason)
        if self.values["storage_backend"] == "s3" and self.values["storage_s3_bucket"] is None:
            reason = "is s3 but storage.s3.bucket is not set"
            raise self.origins["storage_backend"].error("storage.backend", reason)
        if self.values["storage_local_tier"] is not None and self.values["storage_backend"] != "s3":
            reason = "a local tier fronts a shared store: it needs storage.backend: s3"
            raise self.origins["storage_local_tier"].error("storage.local_tier", reason)

    def _check_replica(self) -> None:
        if self.values["replica_advertise_url"] is None:
            return
        origin = self.origins["replica_advertise_url"]
        if self.values["index_backend"] != "redis":
            reason = "replicas find each other's downloads in Redis: it needs index.backend: redis"
            raise origin.error("replica.advertise_url", reason)
        if self.values["replica_secret_file"] is None:
            reason = "replicas must prove themselves to each other: set replica.secret_file too"
            raise origin.error("replica.advertise_url", reason)

    def _check_prefetch(self) -> None:
        """Each image to prefetch names an upstream: at start, not at its first run."""
        labels = {label for up in self.upstreams for label in (up.name, *up.aliases)}
        for index, rule in enumerate(self.prefetch):
            for position, image in enumerate(rule.images):
                registry = parse_image(image).registry
                if registry not in labels:
                    key = f"prefetch[{index}].images[{position}]"
                    reason = f"{registry!r} is not the name or alias of any upstream"
                    raise self.prefetch_origin.error(key, reason)

    def _check_auth(self) -> None:
        """Logins need the htpasswd file; without it, rules and auth keys would be ignored.
        Passthrough upstreams make regcache issue tokens anyway, so their keys may be set."""
        if self.values["auth_htpasswd"] is not None:
            return
        if self.access is not None:
            reason = "access rules need logins: set auth.htpasswd"
            raise self.access_origin.error("access", reason)
        passthrough = any(upstream.passthrough for upstream in self.upstreams)
        for entry in SETTINGS:
            if passthrough and entry.name in _TOKEN_SETTINGS:
                continue
            if entry.section == "auth" and self.origins[entry.name] is not DEFAULTS:
                reason = "is set but auth.htpasswd is not; logins are on only with it"
                raise self.origins[entry.name].error(entry.key, reason)

    def _check_tls(self) -> None:
        """Both halves of the pair or neither, and files that make a working context now,
        so that a bad certificate stops regcache at start rather than at the first client."""
        cert, key, client_ca = (self.values[f"tls_{name}"] for name in _TLS_FILES)
        given = [name for name in _TLS_FILES if self.values[f"tls_{name}"] is not None]
        if not given:
            return
        if cert is None or key is None:
            missing = "tls.key_file" if cert is not None else "tls.cert_file"
            reason = f"is set but {missing} is not; give both to serve HTTPS"
            raise self.origins[f"tls_{given[0]}"].error(f"tls.{given[0]}", reason)
        try:
            server_context(cert, key, client_ca)
        except TlsFileError as exc:
            origin = self.origins["tls_" + exc.key.partition(".")[2]]
            raise origin.error(exc.key, str(exc)) from None

    def _resolve_default(self) -> str:
        """The canonical name of the default upstream, so consumers can compare names."""
        wanted = self.values["default_upstream"]
        for upstream in self.upstreams:
            if wanted == upstream.name or wanted in upstream.aliases:
                return upstream.name
        labels = [label for up in self.upstreams for label in (up.name, *up.aliases)]
        known = ", ".join(labels)
        origin = self.origins["default_upstream"]
        if origin is DEFAULTS:
            # The built-in default only breaks when the upstream list was replaced, so point
            # at that list.
            reason = f"the built-in default {wanted!r} is not among the upstreams listed here"
            reason += f"; set default_upstream to one of: {known}"
            raise self.upstreams_origin.error("default_upstream", reason)
        hint = did_you_mean(wanted, labels)
        reason = f"{wanted!r} is not the name or alias of any upstream{hint}; known: {known}"
        raise origin.error("default_upstream", reason)
