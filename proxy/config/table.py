"""The settings table as the loader and the command line read it, built from the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from proxy.config.declare import (
    Setting,
    UpstreamOption,
    declared_settings,
    declared_upstream_options,
)
from proxy.config.model import Config, UpstreamConfig

SETTINGS: tuple[Setting[Any], ...] = declared_settings(Config)
SETTINGS_BY_KEY: Mapping[str, Setting[Any]] = {entry.key: entry for entry in SETTINGS}
FLAG_SETTINGS: tuple[Setting[Any], ...] = tuple(entry for entry in SETTINGS if entry.flag)

# Environment variable -> the key it overrides.
ENV_VARS: Mapping[str, str] = {entry.env: entry.key for entry in SETTINGS if entry.env}


def _sections() -> dict[str, tuple[str, ...]]:
    sections: dict[str, dict[str, None]] = {}
    for entry in SETTINGS:
        if entry.section:
            sections.setdefault(entry.section, {})[entry.key.rpartition(".")[2]] = None
            # A mapping in a mapping is a key of the outer one: storage -> s3.
            parent, _, child = entry.section.rpartition(".")
            if parent:
                sections.setdefault(parent, {})[child] = None
    return {section: tuple(keys) for section, keys in sections.items()}


# A mapping in the file -> the keys it may hold, e.g. cache -> max_size, max_age;
# storage -> backend, s3; storage.s3 -> endpoint, bucket...
SECTIONS: Mapping[str, tuple[str, ...]] = _sections()
CACHE_KEYS: tuple[str, ...] = SECTIONS["cache"]
TOP_LEVEL_KEYS: tuple[str, ...] = (
    *dict.fromkeys((entry.section or entry.key).partition(".")[0] for entry in SETTINGS),
    "access",
    "prefetch",
    "upstreams",
)

# The password field is given by exactly one of these keys.
PASSWORD_KEYS: tuple[str, ...] = ("password", "password_file", "password_env")
UPSTREAM_OPTIONS: Mapping[str, UpstreamOption[Any]] = declared_upstream_options(UpstreamConfig)
UPSTREAM_KEYS: tuple[str, ...] = tuple(
    key
    for upstream_field in fields(UpstreamConfig)
    for key in (PASSWORD_KEYS if upstream_field.name == "password" else (upstream_field.name,))
)
