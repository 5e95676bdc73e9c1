"""Repository names and tags, with the grammar of the OCI distribution spec."""

from __future__ import annotations

import re

# distribution-spec: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

# Distribution caps the whole name at 255 characters; longer names are a sign of abuse.
MAX_NAME_LENGTH = 255


class InvalidName(ValueError):
    """Not a valid repository name."""


class InvalidTag(ValueError):
    """Not a valid tag."""


def validate_name(name: str) -> str:
    if not name:
        raise InvalidName("repository name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    for component in name.split("/"):
        if not _COMPONENT.fullmatch(component):
            shown = component[:64] or "(empty)"
            raise InvalidName(
                f"repository name component {shown!r} must be lowercase letters, digits "
                "and single separators (. _ __ -)"
            )
    return name


def is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


def validate_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidTag(f"tag {tag[:64]!r} must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")
    return tag
