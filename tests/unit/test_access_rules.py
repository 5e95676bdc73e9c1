"""Access rules and the auth configuration: pattern matching, and the file's errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import bcrypt
import pytest

from proxy.auth.rules import ANONYMOUS_PRINCIPAL, AccessPolicy, Principal, compile_pattern
from proxy.config import CliOverrides, Config, ConfigError, load_config
from proxy.config.access import AccessRule

ALICE = Principal("alice", authenticated=True)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("docker.io/**", "docker.io/library/alpine", True),
        ("docker.io/**", "docker.io.evil/library/alpine", False),
        ("docker.io/**", "quay.io/docker.io/x", False),
        ("**", "ghcr.io/a/b/c", True),
        ("ghcr.io/acme/**", "ghcr.io/acme/app", True),
        ("ghcr.io/acme/**", "ghcr.io/acme-evil/app", False),
        ("docker.io/library/*", "docker.io/library/alpine", True),
        ("docker.io/library/*", "docker.io/library/a/b", False),
        ("docker.io/*/alpine", "docker.io/library/alpine", True),
        ("docker.io/library/al*", "docker.io/library/alpine", True),
        ("docker.io/library/al*", "docker.io/library/busybox", False),
        ("docker.io/**/tools", "docker.io/tools", True),
        ("docker.io/**/tools", "docker.io/a/b/tools", True),
        ("docker.io/a.b", "docker.io/aXb", False),
        ("localhost:5000/**", "localhost:5000/x", True),
    ],
)
def test_patterns(pattern: str, name: str, matches: bool) -> None:
    assert bool(compile_pattern(pattern).fullmatch("/" + name)) is matches


def test_first_match_wins_and_no_match_is_denied() -> None:
    policy = AccessPolicy(
        [
            AccessRule(("ghcr.io/acme/secret",), ("alice",)),
            AccessRule(("ghcr.io/acme/**",), ("authenticated",)),
            AccessRule(("docker.io/**",), ("*",)),
        ]
    )
    bob = Principal("bob", authenticated=True)
    assert policy.allows(ALICE, "ghcr.io", "acme/secret")
    assert not policy.allows(bob, "ghcr.io", "acme/secret")  # the first match decides
    assert policy.allows(bob, "ghcr.io", "acme/app")
    assert not policy.allows(ANONYMOUS_PRINCIPAL, "ghcr.io", "acme/app")
    assert policy.allows(ANONYMOUS_PRINCIPAL, "docker.io", "library/alpine")
    assert not policy.allows(ALICE, "quay.io", "x/y")


def test_default_rule_lets_in_whoever_got_in() -> None:
    policy = AccessPolicy(None)
    assert policy.allows(ALICE, "quay.io", "x/y")
    assert policy.allows(ANONYMOUS_PRINCIPAL, "quay.io", "x/y")


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "regcache.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_config(path, {}, CliOverrides())


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def htpasswd(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text("\n".join(lines) + "\n")
    return path


def bcrypt_line(user: str) -> str:
    return f"{user}:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}"


def test_full_auth_file(tmp_path: Path) -> None:
    hashed = bcrypt_line("alice").replace("$2b$", "$2y$")
    (tmp_path / "key").write_bytes(b"k" * 32)
    config = load(
        tmp_path,
        f"""
        auth:
          htpasswd: {htpasswd(tmp_path, "# users", hashed, "")}
          anonymous: true
          token_ttl: 5m
          token_key_file: {tmp_path / "key"}
        access:
          - repositories: ["docker.io/**", "quay.io/**"]
            users: ["*"]
          - repositories: ["ghcr.io/acme/**"]
            users: [ci, alice]
        """,
    )
    assert config.auth_enabled
    assert config.auth_anonymous
    assert config.auth_htpasswd is not None
    assert list(config.auth_htpasswd.hashes) == ["alice"]
    assert config.auth_token_ttl == 300
    assert config.access == (
        AccessRule(("docker.io/**", "quay.io/**"), ("*",)),
        AccessRule(("ghcr.io/acme/**",), ("ci", "alice")),
    )
    # Neither hashes nor the key show in a repr (which a log line might include).
    assert "$2y$" not in repr(config)
    assert "kkkk" not in repr(config)


def test_auth_is_off_by_default() -> None:
    assert not Config().auth_enabled


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("bob:$apr1$abc$def", "user 'bob' does not have a bcrypt hash"),
        ("bob:{SHA}abc=", "user 'bob' does not have a bcrypt hash"),
        ("bob:plaintext", "user 'bob' does not have a bcrypt hash"),
        ("no-colon", "expected user:hash"),
        ("anonymous:$2y$05$abc", "the user name 'anonymous' is reserved"),
    ],
)
def test_htpasswd_entries_regcache_cannot_verify_are_refused(
    tmp_path: Path, entry: str, reason: str
) -> None:
    path = htpasswd(tmp_path, bcrypt_line("alice"), entry)
    message = error(tmp_path, f"auth:\n  htpasswd: {path}\n")
    assert "line 2: auth.htpasswd:" in message
    assert f"line 2: {reason}" in message
    assert "$apr1$abc" not in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("access:\n  - repositories: [docker.io/**]\n    users: ['*']\n", "line 1: access:"),
        ("auth:\n  anonymous: true\n", "line 2: auth.anonymous:"),
    ],
)
def test_auth_keys_without_htpasswd_are_refused(tmp_path: Path, text: str, where: str) -> None:
    assert where in error(tmp_path, text)


@pytest.mark.parametrize(
    ("rules", "where"),
    [
        ("  - repositories: [Docker.io/**]\n    users: ['*']", "line 4: access[0].repositories[0]"),
        (
            "  - repositories: [docker.io/a**]\n    users: ['*']",
            "line 4: access[0].repositories[0]",
        ),
        ("  - repositories: [docker.io//x]\n    users: ['*']", "line 4: access[0].repositories[0]"),
        ("  - repositories: [docker.io/**]", "line 4: access[0]: the users key is missing"),
        ("  - repositories: []\n    users: ['*']", "line 4: access[0].repositories"),
        ("  - repositories: [x]\n    users: ['a b']", "line 5: access[0].users[0]"),
        ("  - repositories: [x]\n    user: [a]", "line 5: access[0].user: unknown key"),
        ("  - docker.io/**", "line 4: access[0]: must be a mapping"),
        ("  x: y", "line 4: access: must be a list"),
    ],
)
def test_access_errors_name_the_line(tmp_path: Path, rules: str, where: str) -> None:
    path = htpasswd(tmp_path, bcrypt_line("alice"))
    assert where in error(tmp_path, f"auth:\n  htpasswd: {path}\naccess:\n{rules}\n")


def test_short_token_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"short")
    path = htpasswd(tmp_path, bcrypt_line("alice"))
    text = f"auth:\n  htpasswd: {path}\n  token_key_file: {tmp_path / 'key'}\n"
    assert "line 3: auth.token_key_file: " in error(tmp_path, text)
