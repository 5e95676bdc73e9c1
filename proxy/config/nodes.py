"""Reading values out of YAML nodes (``yaml.compose``), which keep their line numbers.

The nodes are read rather than Python objects from ``yaml.safe_load`` so that every error can
name its line, and so that string settings keep exactly the characters the operator typed
(YAML 1.1 would otherwise turn ``password: 0123`` into 83).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.config.parsers import Invalid

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_KINDS = {_NULL: "empty", _BOOL: "a boolean", _INT: "a number", _FLOAT: "a number"}
_CONSTRUCTOR = SafeConstructor()


def line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _KINDS.get(node.tag, "a string")


def node_text(node: Node) -> str:
    # The raw text, not the YAML 1.1 interpretation: "0123" or "yes" as a password is meant
    # literally.
    if not isinstance(node, ScalarNode) or node.tag == _NULL:
        raise Invalid(f"must be a string, not {kind(node)}")
    return str(node.value)


def node_bool(node: Node) -> bool:
    if node.tag != _BOOL:
        raise Invalid(f"must be true or false, not {kind(node)}")
    return bool(_CONSTRUCTOR.construct_object(node))


def node_seconds(node: Node) -> float:
    if node.tag not in (_INT, _FLOAT):
        raise Invalid(f"must be a number of seconds, not {kind(node)}")
    seconds = float(_CONSTRUCTOR.construct_object(node))
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid("must be a finite number of seconds >= 0")
    return seconds


def node_timeout(node: Node) -> float:
    seconds = node_seconds(node)
    if seconds == 0:
        raise Invalid("must be a number of seconds > 0")
    return seconds


def node_list(node: Node) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise Invalid(f"must be a list, not {kind(node)}")
    return list(node.value)


def node_choice(*choices: str) -> Callable[[Node], str]:
    """A reader of a string that must be one of ``choices``."""

    def read(node: Node) -> str:
        text = node_text(node)
        if text not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, not {text[:64]!r}")
        return text

    return read
