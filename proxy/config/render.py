"""A ``Config`` written back as the YAML file that would give it, secrets redacted.

What ``regcache config show`` prints: every value in the form the file reads it, so the output
is a file ``regcache serve --config`` accepts. Which values are secret comes from their
declarations (``secret=True``, ``secret_field``), so a new secret is redacted by being
declared as one.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from proxy.config.authfiles import Htpasswd, TokenKey
from proxy.config.declare import REDACTED, is_secret
from proxy.config.model import Config, UpstreamConfig
from proxy.config.parsers import Listen
from proxy.config.prefetch import PrefetchRule
from proxy.config.table import SETTINGS

_SECRET_SETTINGS = frozenset(f.name for f in fields(Config) if is_secret(f))


def render(config: Config) -> str:
    document: dict[str, Any] = {}
    for entry in SETTINGS:
        value = _plain(getattr(config, entry.name), entry.name in _SECRET_SETTINGS)
        *sections, key = entry.key.split(".")
        mapping = document
        for section in sections:
            mapping = mapping.setdefault(section, {})
        mapping[key] = value
    if not config.auth_enabled:
        # Auth keys without the htpasswd file are refused; off means the section is absent.
        del document["auth"]
    if config.access is not None:
        document["access"] = [
            {"repositories": list(rule.repositories), "users": list(rule.users)}
            for rule in config.access
        ]
    if config.prefetch:
        document["prefetch"] = [_prefetch(rule) for rule in config.prefetch]
    document["upstreams"] = [_upstream(upstream) for upstream in config.upstreams]
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _upstream(upstream: UpstreamConfig) -> dict[str, Any]:
    # Every field is written under the file key of the same name; the password under
    # ``password`` whichever of password, password_file or password_env gave it.
    return {
        model_field.name: _plain(getattr(upstream, model_field.name), is_secret(model_field))
        for model_field in fields(upstream)
        if not (model_field.name in ("username", "password") and upstream.username is None)
    }


def _prefetch(rule: PrefetchRule) -> dict[str, Any]:
    item: dict[str, Any] = {"images": list(rule.images), "every": rule.every}
    if rule.platforms:  # none listed means all, and an empty list is refused
        item["platforms"] = list(rule.platforms)
    return item


def _plain(value: Any, secret: bool) -> Any:
    """``value`` as YAML writes it and the file reads it back."""
    if value is None:
        return None  # an empty key is the same as an absent one: the default
    if secret:
        return REDACTED
    if isinstance(value, Listen | Path):
        return str(value)
    if isinstance(value, Htpasswd | TokenKey):
        return str(value.path)  # the file is shown by name; its contents never
    if isinstance(value, tuple):
        return list(value)
    return value
