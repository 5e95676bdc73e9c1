"""The file's ``access:`` list: which users may pull which repositories.

Only the shape is checked here (and reported with the file's line); proxy.auth.rules
compiles the patterns and matches requests against them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode

from proxy.config.errors import ConfigError
from proxy.config.nodes import is_null, kind, line, node_list, node_text
from proxy.config.parsers import Invalid, did_you_mean

RULE_KEYS: tuple[str, ...] = ("repositories", "users")
# Upstream names, repository components, and the * and ** wildcards.
_PATTERN_COMPONENT = re.compile(r"[a-z0-9._:*-]+")


@dataclass(frozen=True)
class AccessRule:
    """``repositories`` are ``<upstream>/<repository>`` patterns: ``*`` matches within one
    path component, ``**`` any number of components. ``users`` are names, ``*`` (anyone,
    anonymous included) or ``authenticated`` (anyone logged in)."""

    repositories: tuple[str, ...]
    users: tuple[str, ...]
    line: int | None = field(default=None, compare=False)  # in the file, for the audit log


def check_pattern(text: str) -> str:
    if not text or len(text) > 512:
        raise Invalid("a repository pattern must be 1 to 512 characters")
    for component in text.split("/"):
        if not _PATTERN_COMPONENT.fullmatch(component):
            raise Invalid(
                f"{text!r}: each component must be lowercase letters, digits, . _ : - or *"
            )
        if "**" in component and component != "**":
            raise Invalid(f"{text!r}: ** must be a whole path component")
    return text


def check_user(text: str) -> str:
    if not text or any(char.isspace() or char == ":" for char in text):
        raise Invalid(f"{text!r} is not a user name, '*' or 'authenticated'")
    return text


def read_access(source: str, node: Node) -> tuple[AccessRule, ...]:
    """The rules in file order; a ConfigError naming the line for anything else."""
    reader = ItemReader(source)
    return tuple(reader.rule(item, prefix) for item, prefix in reader.items(node, "access"))


class ItemReader:
    """The file's lists of mappings (``access:``, ``prefetch:``), each error with its line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, at: Node, key: str, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=line(at), key=key)

    def items(self, node: Node, name: str) -> list[tuple[Node, str]]:
        """The list's items, each with its key path (``access[0]``)."""
        try:
            items = node_list(node)
        except Invalid as exc:
            raise self.error(node, name, str(exc)) from None
        return [(item, f"{name}[{index}]") for index, item in enumerate(items)]

    def fields(
        self, item: Node, prefix: str, keys: tuple[str, ...], required: tuple[str, ...]
    ) -> dict[str, Node]:
        """An item's keys, checked: only ``keys``, each once, the ``required`` ones given."""
        if not isinstance(item, MappingNode):
            reason = f"must be a mapping with {' and '.join(required)}, not {kind(item)}"
            raise self.error(item, prefix, reason)
        found: dict[str, Node] = {}
        for key_node, value in item.value:
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
            if key not in keys:
                hint = did_you_mean(key, keys) or f"; expected {', '.join(keys)}"
                raise self.error(key_node, f"{prefix}.{key}", f"unknown key{hint}")
            if key in found:
                raise self.error(key_node, f"{prefix}.{key}", "duplicate key")
            found[key] = value
        for key in required:
            if key not in found or is_null(found[key]):
                raise self.error(item, prefix, f"the {key} key is missing")
        return {key: value for key, value in found.items() if not is_null(value)}

    def rule(self, item: Node, prefix: str) -> AccessRule:
        found = self.fields(item, prefix, RULE_KEYS, RULE_KEYS)
        repositories = self.strings(found["repositories"], f"{prefix}.repositories", check_pattern)
        users = self.strings(found["users"], f"{prefix}.users", check_user)
        return AccessRule(repositories, users, line(item))

    def strings(self, node: Node, key: str, check: Callable[[str], str]) -> tuple[str, ...]:
        try:
            items = node_list(node)
        except Invalid as exc:
            raise self.error(node, key, str(exc)) from None
        if not items:
            raise self.error(node, key, "must list at least one entry")
        values = []
        for index, item in enumerate(items):
            try:
                values.append(check(node_text(item)))
            except Invalid as exc:
                raise self.error(item, f"{key}[{index}]", str(exc)) from None
        return tuple(values)
