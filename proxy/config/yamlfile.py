"""The YAML file: its settings and upstreams, parsed, each error naming the file's line."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from proxy.config.access import AccessRule, read_access
from proxy.config.authfiles import parse_secret_file, secret_from_env
from proxy.config.declare import Setting
from proxy.config.errors import ConfigError, Origin
from proxy.config.model import UpstreamConfig
from proxy.config.nodes import is_null, kind, line, node_list, node_text
from proxy.config.parsers import Invalid, did_you_mean, parse_name, parse_nonempty, parse_url
from proxy.config.prefetch import PrefetchRule, read_prefetch
from proxy.config.table import (
    PASSWORD_KEYS,
    SECTIONS,
    SETTINGS_BY_KEY,
    TOP_LEVEL_KEYS,
    UPSTREAM_KEYS,
    UPSTREAM_OPTIONS,
)

T = TypeVar("T")


class Assigned(NamedTuple):
    setting: Setting[Any]
    value: Any
    origin: Origin


class UpstreamList(NamedTuple):
    upstreams: list[UpstreamConfig]
    origin: Origin


@dataclass
class FileSettings:
    """What one file sets, already checked; the loader ranks it against the other sources."""

    values: list[Assigned] = field(default_factory=list)
    upstreams: UpstreamList | None = None
    access: tuple[AccessRule, ...] | None = None
    access_origin: Origin | None = None
    prefetch: tuple[PrefetchRule, ...] | None = None
    prefetch_origin: Origin | None = None


def read_file(path: Path, env: Mapping[str, str]) -> FileSettings:
    """Read the file at ``path``; ``env`` is where ``password_env`` names are looked up."""
    return _FileReader(str(path), env).read(_compose(path))


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
        where = None if mark is None else mark.line + 1
        reason = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
        raise ConfigError(reason, source=source, line=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


class _Entry(NamedTuple):
    key: Node
    value: Node


class _Label(NamedTuple):
    """A name or alias, remembered with its position to report duplicates."""

    path: str
    text: str
    line: int


class _FileReader:
    """Walks the node tree of one YAML file; every error carries that file's line numbers."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def error(self, node: Node, key: str | None, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=line(node), key=key)

    def at(self, key: str, node: Node, convert: Callable[[Node], T]) -> T:
        try:
            return convert(node)
        except Invalid as exc:
            raise self.error(node, key, str(exc)) from None

    def text(self, key: str, node: Node, parse: Callable[[str], T]) -> T:
        return self.at(key, node, lambda n: parse(node_text(n)))

    def read(self, root: Node | None) -> FileSettings:
        found = FileSettings()
        if root is None or is_null(root):
            return found  # an empty file (or only comments) means all defaults
        if not isinstance(root, MappingNode):
            raise self.error(root, None, f"the top level must be a mapping, not {kind(root)}")
        for key, entry in self.fields(root, "", TOP_LEVEL_KEYS).items():
            if key == "upstreams":
                origin = Origin(self.source, line(entry.key))
                found.upstreams = UpstreamList(self.upstreams(entry.value), origin)
            elif key == "access":
                found.access = read_access(self.source, entry.value)
                found.access_origin = Origin(self.source, line(entry.key))
            elif key == "prefetch":
                found.prefetch = read_prefetch(self.source, entry.value)
                found.prefetch_origin = Origin(self.source, line(entry.key))
            elif key in SECTIONS:
                found.values += self.section(key, entry.value)
            else:
                found.values.append(self.setting(SETTINGS_BY_KEY[key], entry.value))
        return found

    def setting(self, setting: Setting[Any], node: Node) -> Assigned:
        text = self.at(setting.key, node, node_text)
        origin = Origin(self.source, line(node))
        return Assigned(setting, origin.check(setting.key, text, setting.parse), origin)

    def section(self, name: str, node: Node) -> list[Assigned]:
        if not isinstance(node, MappingNode):
            raise self.error(node, name, f"must be a mapping, not {kind(node)}")
        found = self.fields(node, name, SECTIONS[name])
        # In declared order, so that of two bad values the one reported does not depend on
        # the file's layout.
        assigned: list[Assigned] = []
        for key in SECTIONS[name]:
            if key not in found:
                continue
            path, value = f"{name}.{key}", found[key].value
            if path in SECTIONS:
                assigned += self.section(path, value)
            else:
                assigned.append(self.setting(SETTINGS_BY_KEY[path], value))
        return assigned

    def fields(self, node: MappingNode, prefix: str, allowed: Sequence[str]) -> dict[str, _Entry]:
        """Checked keys of a mapping; keys with an empty value are left out, as if absent."""
        found: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or is_null(key_node):
                raise self.error(key_node, prefix or None, "keys must be plain strings")
            key = str(key_node.value)
            path = f"{prefix}.{key}" if prefix else key
            if key in found:
                first = line(found[key].key)
                raise self.error(key_node, path, f"duplicate key (first given on line {first})")
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"; expected one of: {', '.join(allowed)}"
                raise self.error(key_node, path, f"unknown key{hint}")
            found[key] = _Entry(key_node, value_node)
        return {key: entry for key, entry in found.items() if not is_null(entry.value)}

    def upstreams(self, node: Node) -> list[UpstreamConfig]:
        items = self.at("upstreams", node, node_list)
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
            raise self.error(node, prefix, f"must be a mapping with name and url, not {kind(node)}")
        fields = self.fields(node, prefix, UPSTREAM_KEYS)
        for required in ("name", "url"):
            if required not in fields:
                raise self.error(node, prefix, f"the {required} key is missing")
        name_node = fields["name"].value
        name = self.text(f"{prefix}.name", name_node, parse_name)
        url = self.text(f"{prefix}.url", fields["url"].value, parse_url)
        aliases = self.aliases(fields, prefix)
        username, password = self.credentials(fields, prefix)
        options = {
            key: self.at(f"{prefix}.{key}", fields[key].value, option.read)
            for key, option in UPSTREAM_OPTIONS.items()
            if key in fields
        }
        upstream = UpstreamConfig(
            name=name,
            url=url,
            aliases=tuple(label.text for label in aliases),
            username=username,
            password=password,
            **options,
        )
        return upstream, [_Label(f"{prefix}.name", name, line(name_node)), *aliases]

    def aliases(self, fields: dict[str, _Entry], prefix: str) -> list[_Label]:
        entry = fields.get("aliases")
        if entry is None:
            return []
        labels = []
        for index, item in enumerate(self.at(f"{prefix}.aliases", entry.value, node_list)):
            path = f"{prefix}.aliases[{index}]"
            labels.append(_Label(path, self.text(path, item, parse_name), line(item)))
        return labels

    def credentials(self, fields: dict[str, _Entry], prefix: str) -> tuple[str | None, str | None]:
        given = sorted((k for k in PASSWORD_KEYS if k in fields), key=lambda k: line(fields[k].key))
        if len(given) > 1:
            first = fields[given[0]].key
            reason = (
                f"conflicts with {given[0]} on line {line(first)}; "
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
        username = self.text(f"{prefix}.username", user_entry.value, parse_nonempty)
        key = given[0]
        return username, self.text(f"{prefix}.{key}", fields[key].value, self.password_parser(key))

    def password_parser(self, key: str) -> Callable[[str], str]:
        if key == "password_file":
            return parse_secret_file
        if key == "password_env":
            return self.read_password_env
        return parse_nonempty

    def read_password_env(self, name: str) -> str:
        return secret_from_env(self.env, name)
