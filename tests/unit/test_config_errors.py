"""Configuration errors: each names its source, the key and the line, and never a password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.configfiles import load, load_error, write

# --- errors in the file: every one names the key path and the line --------------------------

# (file text, line, key path or None, fragment of the reason)
FILE_ERRORS: list[tuple[str, int, str | None, str]] = [
    ('listen: "nope"\n', 1, "listen", "must be HOST:PORT"),
    ('listen: "host:0"\n', 1, "listen", "from 1 to 65535"),
    ('listen: "host:65536"\n', 1, "listen", "from 1 to 65535"),
    ('listen: "host:http"\n', 1, "listen", "from 1 to 65535"),
    ('listen: "::1:5000"\n', 1, "listen", "must be in brackets"),
    ('listen: "[nope]:5000"\n', 1, "listen", "not an IPv6 address"),
    ('listen: ":5000"\n', 1, "listen", "host is missing"),
    ('listen: "bad host:5000"\n', 1, "listen", "not a valid host name"),
    ("listen: 5000\n", 1, "listen", "must be HOST:PORT"),
    ("# a\n# b\nlisten: [a]\n", 3, "listen", "must be a string, not a list"),
    ("log_level: verbose\n", 1, "log_level", "not one of debug, info, warning, error"),
    ("log_level: warn\n", 1, "log_level", "did you mean 'warning'?"),
    ('cache_dir: ""\n', 1, "cache_dir", "must not be empty"),
    ("cache_dir: {a: b}\n", 1, "cache_dir", "must be a string, not a mapping"),
    ("log_level: info\nlissen: x\n", 2, "lissen", "unknown key (did you mean 'listen'?)"),
    (
        "frobnicate: 1\n",
        1,
        "frobnicate",
        "unknown key; expected one of: listen, listen_backlog, workers, cache_dir",
    ),
    ("listen: a:1\nlisten: a:2\n", 2, "listen", "duplicate key (first given on line 1)"),
    ("? [a]\n: b\n", 1, None, "keys must be plain strings"),
    ("default_upstream: dockerio\n", 1, "default_upstream", "did you mean 'docker.io'?"),
    ('default_upstream: ""\n', 1, "default_upstream", "must not be empty"),
    ("upstreams: {}\n", 1, "upstreams", "must be a list, not a mapping"),
    ("upstreams: []\n", 1, "upstreams", "at least one upstream"),
    ("upstreams:\n  - docker.io\n", 2, "upstreams[0]", "must be a mapping with name and url"),
    (
        "upstreams:\n  - name: a.io\n    url: https://a.io\n  - url: https://b.io\n",
        4,
        "upstreams[1]",
        "the name key is missing",
    ),
    ("upstreams:\n  - name: a.io\n", 2, "upstreams[0]", "the url key is missing"),
    ("upstreams:\n  - name: a.io\n    url:\n", 2, "upstreams[0]", "the url key is missing"),
    (
        "upstreams:\n  - name: a.io\n    url: https://a.io\n    tls_verfy: false\n",
        4,
        "upstreams[0].tls_verfy",
        "unknown key (did you mean 'tls_verify'?)",
    ),
    (
        "upstreams:\n  - name: a.io\n    url: https://a.io\n    name: b.io\n",
        4,
        "upstreams[0].name",
        "duplicate key (first given on line 2)",
    ),
    (
        "upstreams:\n  - name: Docker.IO\n    url: https://a.io\n",
        2,
        "upstreams[0].name",
        "lowercase",
    ),
    ("upstreams:\n  - name: a/b\n    url: https://a.io\n", 2, "upstreams[0].name", "not a valid"),
    # A numeric name is taken as the text "5", so the only complaint is the missing default.
    ("upstreams:\n  - name: 5\n    url: https://a.io\n", 1, "default_upstream", "not among"),
]

URL_ERRORS = [
    ("ftp://a.io", "must be an http:// or https:// URL"),
    ("a.io", "must be an http:// or https:// URL"),
    ("https://", "must name a host"),
    ("https://a.io:0", "must name a host"),
    ("https://a.io:99999", "invalid port"),
    ("https://a.io/v2", "no path or query"),
    ("https://a.io?x=1", "no path or query"),
    ("https://a.io#frag", "no path or query"),
    ("https://user:pw@a.io", "must not contain credentials"),
    ("'https://a .io'", "must not contain whitespace"),
    ("[https://a.io]", "must be a string, not a list"),
]
FILE_ERRORS += [
    (
        f"log_level: info\nupstreams:\n  - name: a.io\n    url: {url}\n",
        4,
        "upstreams[0].url",
        reason,
    )
    for url, reason in URL_ERRORS
]

UPSTREAM_FIELD_ERRORS = [
    ("aliases: docker", "aliases", "must be a list, not a string"),
    ("aliases: [ok, Bad]", "aliases[1]", "lowercase"),
    ("aliases: [a.io]", "aliases[0]", "'a.io' is already used by upstreams[0].name on line 2"),
    ("tag_ttl: -1", "tag_ttl", "seconds >= 0"),
    ("tag_ttl: .inf", "tag_ttl", "finite"),
    ("tag_ttl: .nan", "tag_ttl", "finite"),
    ('tag_ttl: "300"', "tag_ttl", "must be a number of seconds, not a string"),
    ("tag_ttl: true", "tag_ttl", "not a boolean"),
    ('tls_verify: "yes"', "tls_verify", "must be true or false, not a string"),
    ("tls_verify: 1", "tls_verify", "must be true or false, not a number"),
    ("username: alice", "username", "no password, password_file or password_env"),
    ("password: pw", "password", "is set but username is not"),
    ("password_env: X", "password_env", "is set but username is not"),
]
FILE_ERRORS += [
    (
        f"upstreams:\n  - name: a.io\n    url: https://a.io\n    {field}\ndefault_upstream: a.io\n",
        4,
        f"upstreams[0].{key}",
        reason,
    )
    for field, key, reason in UPSTREAM_FIELD_ERRORS
]

CREDENTIAL_ERRORS = [
    ('username: ""\n    password: pw', 4, "username", "must not be empty"),
    ('username: u\n    password: ""', 5, "password", "must not be empty"),
    ("username: u\n    password: [pw]", 5, "password", "must be a string, not a list"),
    (
        "password: a\n    username: u\n    password_env: B",
        6,
        "password_env",
        "conflicts with password on line 4",
    ),
    (
        "password_file: /x\n    password: a\n    username: u",
        5,
        "password",
        "conflicts with password_file on line 4",
    ),
    (
        "username: u\n    password_env: NOT_SET",
        5,
        "password_env",
        "environment variable 'NOT_SET' is not set",
    ),
    (
        "username: u\n    password_env: EMPTY",
        5,
        "password_env",
        "environment variable 'EMPTY' is empty",
    ),
    (
        "username: u\n    password_file: /nonexistent/pw",
        5,
        "password_file",
        "cannot read '/nonexistent/pw'",
    ),
    ("username: u\n    password_file: /", 5, "password_file", "cannot read '/'"),
]
FILE_ERRORS += [
    (
        f"upstreams:\n  - name: a.io\n    url: https://a.io\n    {fields}\n"
        "default_upstream: a.io\n",
        line,
        f"upstreams[0].{key}",
        reason,
    )
    for fields, line, key, reason in CREDENTIAL_ERRORS
]


@pytest.mark.parametrize(("text", "line", "key", "reason"), FILE_ERRORS)
def test_file_errors_name_key_and_line(
    tmp_path: Path, text: str, line: int, key: str | None, reason: str
) -> None:
    path = write(tmp_path, text)
    error = load_error(path, {"EMPTY": ""})
    assert (error.source, error.line, error.key) == (str(path), line, key)
    assert reason in error.reason
    prefix = f"config error: {path} line {line}: " + (f"{key}: " if key else "")
    assert str(error).startswith(prefix)


def test_error_message_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        listen: "127.0.0.1:5000"
        log_level: info
        upstreams:
          - name: docker.io
            url: https://registry-1.docker.io
          - name: ghcr.io
            url: ftp://ghcr.io
        """,
    )
    assert str(load_error(path)) == (
        f"config error: {path} line 7: upstreams[1].url: must be an http:// or https:// URL"
    )


@pytest.mark.parametrize(
    ("second", "line", "key"),
    [
        ("name: a.io", 4, "upstreams[1].name"),
        ("name: b.io\n    aliases: [x, a.io]", 5, "upstreams[1].aliases[1]"),
        ("name: b.io\n    aliases: [b.io]", 5, "upstreams[1].aliases[0]"),
    ],
)
def test_names_and_aliases_are_unique(tmp_path: Path, second: str, line: int, key: str) -> None:
    path = write(
        tmp_path,
        f"upstreams:\n  - name: a.io\n    url: https://a.io\n  - {second}\n    url: https://b.io\n",
    )
    error = load_error(path)
    assert (error.line, error.key) == (line, key)
    assert "is already used by" in error.reason
    assert "names and aliases must be unique" in error.reason


def test_alias_of_one_upstream_clashes_with_name_of_a_later_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        upstreams:
          - name: a.io
            aliases: [b.io]
            url: https://a.io
          - name: b.io
            url: https://b.io
        """,
    )
    error = load_error(path)
    assert (error.line, error.key) == (5, "upstreams[1].name")
    assert "already used by upstreams[0].aliases[0] on line 3" in error.reason


def test_replaced_list_without_the_default_points_at_upstreams(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: info\nupstreams:\n  - name: a.io\n    url: https://a.io\n")
    error = load_error(path)
    assert (error.line, error.key) == (2, "default_upstream")
    assert "built-in default 'docker.io'" in error.reason
    assert "set default_upstream to one of: a.io" in error.reason


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("listen: [1\n", 2),
        ("a: b\n c: d\n", 2),
        ("x: 1\n\t- y\n", 2),
        ("a: 1\n---\nb: 2\n", 2),
        ("x: *nope\n", 1),
    ],
)
def test_yaml_syntax_errors_give_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    error = load_error(path)
    assert error.line == line
    assert str(error).startswith(f"config error: {path} line {line}: invalid YAML: ")


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"listen: \xff\n")
    assert "invalid YAML" in load_error(path).reason


@pytest.mark.parametrize("text", ["- a\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error = load_error(write(tmp_path, text))
    assert error.line == 1
    assert "the top level must be a mapping" in error.reason


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert str(load_error(path)) == (
        f"config error: {path}: cannot read the file: No such file or directory"
    )


def test_directory_as_file(tmp_path: Path) -> None:
    assert "cannot read the file" in load_error(tmp_path).reason


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n", encoding="utf-8")
    path = write(
        tmp_path,
        f"upstreams:\n  - name: docker.io\n    url: https://d.io\n    username: u\n"
        f"    password_file: {tmp_path / 'pw'}\n",
    )
    error = load_error(path)
    assert (error.line, error.key) == (5, "upstreams[0].password_file")
    assert "is empty" in error.reason


def test_passwords_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstreams:\n  - name: docker.io\n    url: https://u:hunter2@d.io\n    password: hunter2\n",
    )
    assert "hunter2" not in str(load_error(path))
    assert "hunter2" not in str(load_error(upstreams=(("x.io", "https://u:hunter2@x.io"),)))


# --- errors from the environment and the command line --------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "key", "reason"),
    [
        ("REGCACHE_LISTEN", "nope", "listen", "must be HOST:PORT"),
        ("REGCACHE_CACHE_DIR", " ", "cache_dir", "must not be empty"),
        ("REGCACHE_LOG_LEVEL", "loud", "log_level", "not one of"),
        ("REGCACHE_DEFAULT_UPSTREAM", "nowhere", "default_upstream", "not the name or alias"),
    ],
)
def test_env_errors_name_the_variable(var: str, value: str, key: str, reason: str) -> None:
    error = load_error(None, {var: value})
    assert str(error).startswith(f"config error: environment variable {var}: {key}: ")
    assert reason in error.reason
    assert error.line is None


@pytest.mark.parametrize(
    ("cli", "option", "key", "reason"),
    [
        ({"listen": "host:99999"}, "--listen", "listen", "from 1 to 65535"),
        ({"cache_dir": ""}, "--cache-dir", "cache_dir", "must not be empty"),
        ({"log_level": "trace"}, "--log-level", "log_level", "not one of"),
        (
            {"default_upstream": "ghcr"},
            "--default-upstream",
            "default_upstream",
            "did you mean 'ghcr.io'?",
        ),
        ({"upstreams": (("x.io", "ftp://x.io"),)}, "--upstream x.io", "url", "http:// or https://"),
        ({"upstreams": (("X", "https://x.io"),)}, "--upstream X", "name", "lowercase"),
    ],
)
def test_cli_errors_name_the_option(
    cli: dict[str, Any], option: str, key: str, reason: str
) -> None:
    error = load_error(None, None, **cli)
    assert str(error).startswith(f"config error: command line option {option}: {key}: ")
    assert reason in error.reason


def test_file_default_overridden_by_valid_env_is_not_checked(tmp_path: Path) -> None:
    # default_upstream is checked once, against the final upstream list and final value.
    path = write(tmp_path, "default_upstream: nowhere\n")
    assert load(path, {"REGCACHE_DEFAULT_UPSTREAM": "ghcr.io"}).default_upstream == "ghcr.io"


def test_file_default_error_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: info\ndefault_upstream: nowhere\n")
    error = load_error(path)
    assert (error.line, error.key) == (2, "default_upstream")
