"""Configuration loading: defaults, the file, and the precedence of file, environment and flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.config import (
    BUILTIN_UPSTREAMS,
    DEFAULT_TAG_TTL,
    SECTIONS,
    TOP_LEVEL_KEYS,
    UPSTREAM_KEYS,
    Config,
    UpstreamConfig,
)
from tests.support.configfiles import EXAMPLE, load, write

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
