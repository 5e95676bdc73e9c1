"""The ``index:`` section, a section with a section in it: ``index.backend`` and
``index.redis.{url,prefix}``, from the file and from REGCACHE_INDEX_* variables; a password
in the Redis URL never shown by ``regcache config show``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.cli import main
from tests.support.configfiles import load, load_error, write

SECRET = "hunter2-Sup3r-secret"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("REGCACHE_"):
            monkeypatch.delenv(var)


def error(path: Path | None, env: dict[str, str] | None = None) -> str:
    return str(load_error(path, env))


def test_defaults_are_the_local_index() -> None:
    config = load(None)
    assert config.index_backend == "local"
    assert config.index_redis_url == "redis://127.0.0.1:6379/0"
    assert config.index_redis_prefix == "regcache:"


def test_the_file_sets_the_nested_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        index:
          backend: Redis
          redis:
            url: rediss://:pw@redis.example.com:6380/2
            prefix: "team-a:"
        """,
    )
    config = load(path)
    assert config.index_backend == "redis"
    assert config.index_redis_url == "rediss://:pw@redis.example.com:6380/2"
    assert config.index_redis_prefix == "team-a:"


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "index:\n  backend: local\n")
    env = {
        "REGCACHE_INDEX_BACKEND": "redis",
        "REGCACHE_INDEX_REDIS_URL": "unix:///run/redis/redis.sock",
        "REGCACHE_INDEX_REDIS_PREFIX": "x:",
    }
    config = load(path, env)
    assert (config.index_backend, config.index_redis_url) == (
        "redis",
        env["REGCACHE_INDEX_REDIS_URL"],
    )
    assert config.index_redis_prefix == "x:"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("index:\n  backend: etcd\n", "index.backend", "is not one of local, redis"),
        ("index:\n  redis:\n    urls: x\n", "index.redis.urls", "unknown key"),
        ("index:\n  redis: redis://h\n", "index.redis", "must be a mapping"),
        ("index:\n  redis:\n    url: http://h\n", "index.redis.url", "redis://, rediss://"),
        ("index:\n  redis:\n    url: 'redis://h:port'\n", "index.redis.url", "invalid port"),
        ("index:\n  redis:\n    url: redis://h?password=pw\n", "index.redis.url", "not as a"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    message = error(write(tmp_path, text))
    assert f"{key}:" in message
    assert reason in message
    assert "=pw" not in message  # a value that may hold a password is never echoed


def test_config_show_redacts_the_password_and_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGCACHE_INDEX_BACKEND", "redis")
    monkeypatch.setenv("REGCACHE_INDEX_REDIS_URL", f"redis://cache:{SECRET}@10.0.0.7:6379/1")
    assert main(["config", "show"]) == 0
    shown = capsys.readouterr().out
    assert SECRET not in shown
    assert "url: redis://cache:<redacted>@10.0.0.7:6379/1" in shown
    monkeypatch.delenv("REGCACHE_INDEX_REDIS_URL")
    again = load(write(tmp_path, shown))
    assert again.index_backend == "redis"
    assert again.index_redis_url == "redis://cache:<redacted>@10.0.0.7:6379/1"


def test_a_url_without_a_password_is_shown_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    assert "url: redis://127.0.0.1:6379/0" in capsys.readouterr().out


def test_repr_leaves_the_url_out() -> None:
    config = load(None, {"REGCACHE_INDEX_REDIS_URL": f"redis://:{SECRET}@h"})
    assert SECRET not in repr(config)
