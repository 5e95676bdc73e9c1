"""How a setting is declared: on the model field that holds its value, and nowhere else.

``log_level: str = setting("info", parse_log_level, env=..., flag=..., help=...)`` on
``Config`` is the whole declaration: the file key, the default, the parser, the
``REGCACHE_*`` variable, the ``regcache serve`` flag and its help line are all read back from
the field (see proxy.config.table). Keys of ``upstreams:`` entries work the same way with
``upstream_option``.

A secret (a password, a key) says so with ``secret=True`` on its declaration, or with
``secret_field`` for a field with rules of its own: whatever shows configuration
(``regcache config show``, ``--help``) redacts it from that mark, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from yaml.nodes import Node

T = TypeVar("T")

_SETTING = "regcache.setting"
_UPSTREAM_OPTION = "regcache.upstream_option"
_SECRET = "regcache.secret"
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """A setting that can come from the file, and perhaps the environment and a flag."""

    default: T
    # The same parser for every source, so a value means the same wherever it is given.
    parse: Callable[[str], T]
    section: str | None = None
    env: str | None = None
    flag: str | None = None
    metavar: str | None = None
    help: str = ""
    secret: bool = False
    # How a secret is shown; None: it is replaced whole with REDACTED.
    redact: Callable[[T], T] | None = None
    name: str = ""  # of the model field; filled in by declared_settings

    @property
    def key(self) -> str:
        """The path in the file, which errors name: ``listen``, ``cache.max_size``,
        ``index.redis.url`` (a section in a section)."""
        if self.section is None:
            return self.name
        return f"{self.section}.{self.name.removeprefix(_field_prefix(self.section))}"

    @property
    def is_switch(self) -> bool:
        """A flag without a value: giving it turns the setting on."""
        return isinstance(self.default, bool)


def setting(
    default: T,
    parse: Callable[[str], T],
    *,
    section: str | None = None,
    env: str | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    help: str = "",
    secret: bool = False,
    redact: Callable[[T], T] | None = None,
) -> T:
    """Declare a model field as a setting; ``section`` puts it under that mapping in the file,
    and a dotted one (``storage.s3``) under a mapping in a mapping.

    A field in a section is named ``<section>_<key>``, so the model stays flat for its users;
    in a nested section (``index.redis``), ``index_redis_<key>``.
    """
    if redact is not None and not secret:
        raise TypeError("only a secret is redacted")
    declared = Setting(default, parse, section, env, flag, metavar, help, secret, redact)
    # Out of repr too, so that logging a Config never prints one.
    return field(default=default, repr=not secret, metadata={_SETTING: declared, _SECRET: secret})


def declared_settings(model: type) -> tuple[Setting[Any], ...]:
    """The settings declared on ``model``'s fields, in field order."""
    found = []
    for model_field in fields(model):
        declared: Setting[Any] | None = model_field.metadata.get(_SETTING)
        if declared is None:
            continue
        name = model_field.name
        # Caught at import, so a malformed declaration never reaches an operator.
        if declared.section and not name.startswith(_field_prefix(declared.section)):
            raise TypeError(f"{name}: a setting in {declared.section}: must start with its name")
        if declared.flag and declared.is_switch and declared.default:
            raise TypeError(f"{name}: a switch can only turn a setting on, so default to False")
        found.append(replace(declared, name=name))
    return tuple(found)


def redact_url_password(url: str) -> str:
    """The URL with its password, if it has one, replaced by REDACTED: what it points at
    stays visible, and the shown URL is still one the setting reads."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def _field_prefix(section: str) -> str:
    return section.replace(".", "_") + "_"


@dataclass(frozen=True)
class UpstreamOption(Generic[T]):
    """An optional key of an ``upstreams:`` entry, read from its typed YAML value."""

    read: Callable[[Node], T]


def upstream_option(default: T, read: Callable[[Node], T], *, secret: bool = False) -> T:
    """Declare a field of an upstream entry that the file sets with a key of the same name."""
    metadata = {_UPSTREAM_OPTION: UpstreamOption(read), _SECRET: secret}
    return field(default=default, repr=not secret, metadata=metadata)


def secret_field(default: T) -> T:
    """A secret model field that is neither a setting nor an option (the upstream password)."""
    return field(default=default, repr=False, metadata={_SECRET: True})


def is_secret(model_field: Field[Any]) -> bool:
    return bool(model_field.metadata.get(_SECRET, False))


def declared_upstream_options(model: type) -> dict[str, UpstreamOption[Any]]:
    """Field name -> how to read it, in field order."""
    return {
        model_field.name: model_field.metadata[_UPSTREAM_OPTION]
        for model_field in fields(model)
        if _UPSTREAM_OPTION in model_field.metadata
    }
