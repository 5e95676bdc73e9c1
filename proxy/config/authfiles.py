"""The files client authentication reads at start: the htpasswd file and the token key; and
secrets given by file or by environment variable (upstream passwords, S3 keys).

Read while the configuration loads, so a missing file or an entry regcache cannot verify
stops the start with a config error naming it, instead of failing logins later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config.parsers import Invalid, parse_nonempty

# What `htpasswd -B` and bcrypt libraries write; $2a$ is the same algorithm.
BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
ANONYMOUS = "anonymous"
MIN_KEY_BYTES = 32
_USER = re.compile(r"[^\s:]{1,255}")


@dataclass(frozen=True)
class Htpasswd:
    """User -> bcrypt hash, as read from ``path``; never shown in a repr or a log."""

    path: Path
    hashes: dict[str, bytes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class TokenKey:
    """The bytes that sign regcache's bearer tokens; never shown in a repr or a log."""

    path: Path
    secret: bytes = field(repr=False, compare=False)


def _read(text: str) -> tuple[Path, bytes]:
    path = Path(parse_nonempty(text)).expanduser()
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise Invalid(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def parse_htpasswd(text: str) -> Htpasswd:
    path, data = _read(text)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise Invalid(f"{str(path)!r} is not UTF-8 text") from None
    hashes: dict[str, bytes] = {}
    for number, entry in enumerate(lines, 1):
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        user, sep, hashed = entry.strip().partition(":")
        where = f"{str(path)!r} line {number}"
        if not sep or not _USER.fullmatch(user) or not hashed:
            raise Invalid(f"{where}: expected user:hash")
        if user == ANONYMOUS:
            # The name stands for requests without credentials in access rules.
            raise Invalid(f"{where}: the user name {ANONYMOUS!r} is reserved")
        if not hashed.startswith(BCRYPT_PREFIXES):
            # The hash itself is not echoed; its scheme is enough to fix the entry.
            raise Invalid(
                f"{where}: user {user!r} does not have a bcrypt hash; "
                "only bcrypt entries are accepted (htpasswd -B)"
            )
        if user in hashes:
            raise Invalid(f"{where}: user {user!r} is listed twice")
        hashes[user] = hashed.encode("ascii", "replace")
    if not hashes:
        raise Invalid(f"{str(path)!r} lists no users")
    return Htpasswd(path, hashes)


def parse_token_key_file(text: str) -> TokenKey:
    path, data = _read(text)
    secret = data.strip()
    if len(secret) < MIN_KEY_BYTES:
        raise Invalid(
            f"{str(path)!r} holds {len(secret)} bytes; a token key needs at least "
            f"{MIN_KEY_BYTES} (e.g. head -c 48 /dev/urandom | base64)"
        )
    return TokenKey(path, secret)


def parse_secret_file(text: str) -> str:
    """The secret in the file named ``text``."""
    path = Path(parse_nonempty(text)).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Invalid(f"{str(path)!r} is not UTF-8 text") from None
    # Files written by `echo` or editors end with a newline that is not part of the secret.
    secret = content.rstrip("\r\n")
    if not secret:
        raise Invalid(f"{str(path)!r} is empty")
    return secret


def secret_from_env(env: Mapping[str, str], name: str) -> str:
    """The secret in the environment variable ``name``."""
    value = env.get(name)
    if value is None:
        raise Invalid(f"environment variable {name!r} is not set")
    if not value:
        raise Invalid(f"environment variable {name!r} is empty")
    return value
