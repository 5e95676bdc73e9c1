"""Configuration loading: defaults, sources and their precedence, and located errors."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import (
    BUILTIN_UPSTREAMS,
    DEFAULT_TAG_TTL,
    SECTIONS,
    TOP_LEVEL_KEYS,
    UPSTREAM_KEYS,
    CliOverrides,
    Config,
    ConfigError,
    UpstreamConfig,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "regcache.example.yaml"


def write(tmp_path: Path, text: str, name: str = "regcache.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path | None = None, env: dict[str, str] | None = None, **cli: Any) -> Config:
    return load_config(path, env or {}, CliOverrides(**cli))


def load_error(
    path: Path | None = None, env: dict[str, str] | None = None, **cli: Any
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, env, **cli)
    assert "\n" not in str(info.value)
    return info.value


# --- defaults -------------------------------------------------------------------------------


def test_defaults_without_file() -> None:
    config = load()
    assert config == Config()
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 5000)
    assert config.cache_dir == Path("regcache-cache")
    assert config.default_upstream == "docker.io"
    assert config.log_level == "info"
    assert [(up.name, up.url) for up in config.upstreams] == list(BUILTIN_UPSTREAMS)
    assert all(up.tag_ttl == DEFAULT_TAG_TTL and up.tls_verify for up in config.upstreams)
    assert all(up.username is None and up.password is None for up in config.upstreams)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_file_means_all_defaults(tmp_path: Path, text: str) -> None:
    assert load(write(tmp_path, text)) == Config()


def test_example_file_equals_defaults() -> None:
    assert load(EXAMPLE) == Config()


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    section_keys = [key for keys in SECTIONS.values() for key in keys]
    for key in (*TOP_LEVEL_KEYS, *section_keys, *UPSTREAM_KEYS):
        assert re.search(rf"^\s*(#\s*)?(- )?{key}:", text, re.MULTILINE), key
    for name, url in BUILTIN_UPSTREAMS:
        assert f"name: {name}" in text
        assert f"url: {url}" in text


def test_example_private_registry_block_is_valid_when_uncommented(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    marker = "  # - name: registry.example.com"
    head, tail = EXAMPLE.read_text(encoding="utf-8").split(marker)
    text = head + re.sub(r"^  # ", "  ", marker + tail, flags=re.MULTILINE)
    text = text.replace("/run/secrets/registry-password", str(secret))
    config = load(write(tmp_path, text))
    private = config.upstream("private")
    assert private is not None
    assert (private.name, private.username, private.password) == (
        "registry.example.com",
        "robot",
        "s3cret",
    )
    assert private.tag_ttl == 60


# --- the file -------------------------------------------------------------------------------

FULL = """
listen: "127.0.0.1:6000"
cache_dir: /var/lib/regcache
default_upstream: hub
log_level: WARNING
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io/
    aliases: [hub, docker]
  - name: registry.example.com:5000
    url: HTTP://registry.example.com:5000
    username: "robot"
    password: 0123
    tag_ttl: 2.5
    tls_verify: false
"""


def test_full_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL))
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 6000)
    assert config.cache_dir == Path("/var/lib/regcache")
    assert config.log_level == "warning"
    # An alias is accepted and stored as the canonical name, so consumers can compare names.
    assert config.default_upstream == "docker.io"
    assert config.upstreams == (
        UpstreamConfig(
            name="docker.io", url="https://registry-1.docker.io", aliases=("hub", "docker")
        ),
        UpstreamConfig(
            name="registry.example.com:5000",
            url="http://registry.example.com:5000",
            username="robot",
            password="0123",  # the text as written, not YAML 1.1's octal 83
            tag_ttl=2.5,
            tls_verify=False,
        ),
    )
    assert config.upstream("hub") is config.upstreams[0]
    assert config.upstreams[0].is_docker_hub


def test_upstreams_list_replaces_builtins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        default_upstream: quay.io
        upstreams:
          - {name: quay.io, url: "https://quay.io"}
        """,
    )
    config = load(path)
    assert [up.name for up in config.upstreams] == ["quay.io"]
    assert config.upstream("docker.io") is None


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:5000", "127.0.0.1", 5000),
        ("[::1]:5000", "::1", 5000),
        ("[::]:1", "::", 1),
        ("localhost:65535", "localhost", 65535),
        ("cache-1.internal:8080", "cache-1.internal", 8080),
    ],
)
def test_listen_forms(tmp_path: Path, listen: str, host: str, port: int) -> None:
    config = load(write(tmp_path, f'listen: "{listen}"\n'))
    assert (config.listen_host, config.listen_port) == (host, port)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "Debug", "ERROR"])
def test_log_levels(level: str) -> None:
    assert load(log_level=level).log_level == level.lower()


def test_relative_cache_dir_stays_relative_to_the_working_directory(tmp_path: Path) -> None:
    assert load(write(tmp_path, "cache_dir: cache/here\n")).cache_dir == Path("cache/here")


def test_cache_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load(cache_dir="~/c").cache_dir == tmp_path / "c"


def test_empty_value_counts_as_absent(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        listen:
        log_level: ~
        upstreams:
          - name: a.io
            url: https://a.io
            aliases:
            tag_ttl:
        default_upstream: a.io
        """,
    )
    config = load(path)
    assert (config.listen_port, config.log_level) == (5000, "info")
    assert config.upstreams == (UpstreamConfig(name="a.io", url="https://a.io"),)


def test_plain_scalars_keep_their_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        upstreams:
          - name: docker.io
            url: https://registry-1.docker.io
            username: yes
            password: 1e3
        """,
    )
    hub = load(path).upstreams[0]
    assert (hub.username, hub.password) == ("yes", "1e3")


@pytest.mark.parametrize(
    ("ttl", "expected"), [("0", 0.0), ("300", 300.0), ("0.5", 0.5), ("1_000", 1000.0)]
)
def test_tag_ttl_numbers(tmp_path: Path, ttl: str, expected: float) -> None:
    path = write(
        tmp_path, f"upstreams:\n  - {{name: docker.io, url: 'https://d.io', tag_ttl: {ttl}}}\n"
    )
    assert load(path).upstreams[0].tag_ttl == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), (" pw with spaces \n\n", " pw with spaces ")],
)
def test_password_file_strips_only_trailing_newlines(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / "pw").write_bytes(content.encode())
    path = write(
        tmp_path,
        f"""
        upstreams:
          - name: docker.io
            url: https://registry-1.docker.io
            username: alice
            password_file: {tmp_path / "pw"}
        """,
    )
    assert load(path).upstreams[0].password == expected


def test_password_env_reads_the_given_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        upstreams:
          - name: docker.io
            url: https://registry-1.docker.io
            username: alice
            password_env: HUB_PASSWORD
        """,
    )
    assert load(path, {"HUB_PASSWORD": "from-env"}).upstreams[0].password == "from-env"


def test_anchors_and_aliases_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        upstreams:
          - name: a.io
            url: &u https://mirror.example.com
          - name: b.io
            url: *u
        default_upstream: b.io
        """,
    )
    assert {up.url for up in load(path).upstreams} == {"https://mirror.example.com"}


# --- precedence -----------------------------------------------------------------------------

# key: (file value, env value, CLI value, attribute, expected from file, env, CLI)
LAYERS = {
    "listen": (
        '"127.0.0.1:1001"',
        "127.0.0.1:1002",
        "127.0.0.1:1003",
        "listen_port",
        1001,
        1002,
        1003,
    ),
    "cache_dir": ("/file", "/env", "/cli", "cache_dir", Path("/file"), Path("/env"), Path("/cli")),
    "default_upstream": (
        "ghcr.io",
        "quay.io",
        "gcr.io",
        "default_upstream",
        "ghcr.io",
        "quay.io",
        "gcr.io",
    ),
    "log_level": ("error", "warning", "debug", "log_level", "error", "warning", "debug"),
}


@pytest.mark.parametrize("key", LAYERS)
def test_precedence_file_env_cli(tmp_path: Path, key: str) -> None:
    file_value, env_value, cli_value, attribute, from_file, from_env, from_cli = LAYERS[key]
    path = write(tmp_path, f"{key}: {file_value}\n")
    env = {f"REGCACHE_{key.upper()}": str(env_value)}
    assert getattr(load(path), attribute) == from_file
    assert getattr(load(path, env), attribute) == from_env
    assert getattr(load(path, env, **{key: cli_value}), attribute) == from_cli
    assert getattr(load(None, env), attribute) == from_env
    assert getattr(load(path, {}, **{key: cli_value}), attribute) == from_cli


def test_empty_env_var_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: error\n")
    assert load(path, {"REGCACHE_LOG_LEVEL": ""}).log_level == "error"


def test_unrelated_env_vars_are_ignored() -> None:
    assert load(None, {"REGCACHE_SOMETHING_ELSE": "x", "LISTEN": "nope"}) == Config()


def test_cli_upstream_adds_an_upstream() -> None:
    config = load(upstreams=(("registry.example.com", "https://registry.example.com/"),))
    assert config.upstreams[:-1] == Config().upstreams
    assert config.upstreams[-1] == UpstreamConfig(
        name="registry.example.com", url="https://registry.example.com"
    )


def test_cli_upstream_replaces_only_the_url(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        upstreams:
          - name: docker.io
            url: https://registry-1.docker.io
            aliases: [hub]
            username: alice
            password: pw
            tag_ttl: 10
            tls_verify: false
        """,
    )
    for name in ("docker.io", "hub"):
        (hub,) = load(path, upstreams=((name, "http://mirror.local:5000"),)).upstreams
        assert hub == UpstreamConfig(
            name="docker.io",
            url="http://mirror.local:5000",
            aliases=("hub",),
            username="alice",
            password="pw",
            tag_ttl=10,
            tls_verify=False,
        )


def test_cli_upstream_can_be_the_default() -> None:
    config = load(
        upstreams=(("local:5000", "http://localhost:5000"),), default_upstream="local:5000"
    )
    assert config.default_upstream == "local:5000"


def test_env_default_upstream_may_name_a_cli_upstream() -> None:
    env = {"REGCACHE_DEFAULT_UPSTREAM": "x.io"}
    assert load(None, env, upstreams=(("x.io", "https://x.io"),)).default_upstream == "x.io"


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


# --- properties -----------------------------------------------------------------------------


@given(host=st.ip_addresses(), port=st.integers(1, 65535))
def test_any_ip_and_port_can_be_listened_on(host: Any, port: int) -> None:
    text = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
    config = load(listen=text)
    assert (config.listen_host, config.listen_port) == (str(host), port)


@given(port=st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_ports_outside_the_range_are_rejected(port: int) -> None:
    assert "65535" in load_error(listen=f"127.0.0.1:{port}").reason


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_VALUES = (
    _SCALARS | st.lists(_SCALARS, max_size=2) | st.dictionaries(_SCALARS, _SCALARS, max_size=2)
)
# password_file is left out: a random path could name a device that blocks when read.
_UPSTREAM = st.dictionaries(
    st.sampled_from([key for key in UPSTREAM_KEYS if key != "password_file"]), _VALUES, max_size=5
)
_DOCUMENT = st.dictionaries(
    st.sampled_from(TOP_LEVEL_KEYS), _VALUES | st.lists(_UPSTREAM, max_size=3), max_size=5
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(document=_DOCUMENT)
def test_any_document_loads_or_fails_with_config_error(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    try:
        load(path, {"X": "x"})
    except ConfigError as error:
        message = str(error)
    else:
        message = ""
    assert "\n" not in message


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_loads_or_fails_with_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load(path)
    except ConfigError as error:
        message = str(error)
    else:
        message = ""
    assert "\n" not in message


# --- operations settings: offline, cache bounds, timeouts, event loop ----------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("50GiB", 50 * 2**30), ("500MB", 500 * 10**6), ("1073741824", 2**30), ("1.5 KiB", 1536)],
)
def test_cache_max_size_units(tmp_path: Path, text: str, size: int) -> None:
    config = load(write(tmp_path, f"cache:\n  max_size: {text}\n"))
    assert config.cache_max_size == size
    assert config.cache_max_age is None


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90", 90)])
def test_cache_max_age_units(tmp_path: Path, text: str, seconds: float) -> None:
    assert load(write(tmp_path, f"cache:\n  max_age: {text}\n")).cache_max_age == seconds


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("cache:\n  max_size: lots\n", "cache.max_size", 2),
        ("cache:\n  max_size: 0\n", "cache.max_size", 2),
        ("cache:\n  max_age: -1d\n", "cache.max_age", 2),
        ("cache:\n  max_sise: 1GiB\n", "cache.max_sise", 2),
        ("cache: 5\n", "cache", 1),
        ("offline: perhaps\n", "offline", 1),
        ("event_loop: trio\n", "event_loop", 1),
        (
            "upstreams:\n  - name: a.io\n    url: https://a.io\n    read_timeout: 0\n",
            "upstreams[0].read_timeout",
            4,
        ),
        (
            "upstreams:\n  - name: a.io\n    url: https://a.io\n    serve_stale_on_not_found: 1\n",
            "upstreams[0].serve_stale_on_not_found",
            4,
        ),
    ],
)
def test_operations_settings_errors_name_key_and_line(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    error = load_error(write(tmp_path, text))
    assert error.key == key
    assert error.line == line


def test_offline_from_file_env_and_flag(tmp_path: Path) -> None:
    assert load(write(tmp_path, "offline: true\n")).offline
    assert load(env={"REGCACHE_OFFLINE": "yes"}).offline
    assert load(offline=True).offline
    assert not load(write(tmp_path, "offline: false\n")).offline


def test_upstream_timeouts_and_stale_setting(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
            default_upstream: a.io
            upstreams:
              - name: a.io
                url: https://a.io
                connect_timeout: 2.5
                read_timeout: 30
                serve_stale_on_not_found: true
            """,
        )
    )
    upstream = config.upstreams[0]
    assert (upstream.connect_timeout, upstream.read_timeout) == (2.5, 30.0)
    assert upstream.serve_stale_on_not_found


def test_event_loop_choice(tmp_path: Path) -> None:
    assert load().event_loop == "asyncio"
    assert load(write(tmp_path, "event_loop: asyncio\n")).event_loop == "asyncio"
    assert load(env={"REGCACHE_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
