"""Configuration: parsed once into immutable objects.

Every setting is declared once, on its field of ``Config`` (proxy.config.model); the YAML file,
the ``REGCACHE_*`` variables, the ``regcache serve`` flags and their help are read from there.

- parsers: a setting's text -> its value
- nodes: values out of YAML nodes, which keep their line numbers
- declare: how a setting, or an option of an upstream entry, is declared on a field
- model: ``Config`` and ``UpstreamConfig``, whose fields are the settings table
- table: that table indexed for the loader and the command line (ENV_VARS, TOP_LEVEL_KEYS...)
- errors: ``ConfigError``, and where a value came from
- yamlfile: the YAML file, read with a line number for every error
- tls: the ``tls:`` files -> a server SSL context, or which file is wrong
- loader: precedence (defaults < file < environment < flags) and ``load_config``
- render: a ``Config`` as YAML, secrets redacted (``regcache config show``)
"""

from proxy.config.declare import REDACTED, Setting
from proxy.config.errors import ConfigError
from proxy.config.loader import CliOverrides, load_config
from proxy.config.model import (
    BUILTIN_UPSTREAMS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_TAG_TTL,
    Config,
    UpstreamConfig,
)
from proxy.config.parsers import EVENT_LOOPS, LOG_LEVELS, Listen
from proxy.config.render import render
from proxy.config.table import (
    CACHE_KEYS,
    ENV_VARS,
    FLAG_SETTINGS,
    PASSWORD_KEYS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    UPSTREAM_KEYS,
)

__all__ = [
    "BUILTIN_UPSTREAMS",
    "CACHE_KEYS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TAG_TTL",
    "ENV_VARS",
    "EVENT_LOOPS",
    "FLAG_SETTINGS",
    "LOG_LEVELS",
    "PASSWORD_KEYS",
    "REDACTED",
    "SECTIONS",
    "TOP_LEVEL_KEYS",
    "UPSTREAM_KEYS",
    "CliOverrides",
    "Config",
    "ConfigError",
    "Listen",
    "Setting",
    "UpstreamConfig",
    "load_config",
    "render",
]
