"""``regcache config show``: the effective configuration as a file serve accepts, secrets
redacted whatever their source."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.config import REDACTED, CliOverrides, Config, UpstreamConfig, load_config
from proxy.config.declare import declared_settings, is_secret, setting

SECRET = "hunter2-Sup3r-secret"
FILE = """\
listen: "[::1]:6000"
cache:
  max_size: 1GiB
  max_age: 30d
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    aliases: [hub]
    username: alice
    {source}
    tag_ttl: 30
    allow_private_redirects: true
  - name: ghcr.io
    url: https://ghcr.io
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("REGCACHE_"):
            monkeypatch.delenv(var)


@pytest.fixture(params=["password", "password_file", "password_env"])
def config_file(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A file whose docker.io password, SECRET, comes from each of the three sources."""
    source = {
        "password": f"password: {SECRET}",
        "password_file": f"password_file: {tmp_path / 'pw'}",
        "password_env": "password_env: REGISTRY_PASSWORD",
    }[request.param]
    (tmp_path / "pw").write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("REGISTRY_PASSWORD", SECRET)
    path = tmp_path / "regcache.yaml"
    path.write_text(FILE.format(source=source), encoding="utf-8")
    return path


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["config", "show", *args])
    out, err = capsys.readouterr()
    return status, out, err


def redacted(config: Config) -> Config:
    upstreams = tuple(
        replace(up, password=REDACTED if up.password else None) for up in config.upstreams
    )
    return replace(config, upstreams=upstreams)


def test_shows_what_serve_would_run_with_and_no_secret(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGCACHE_LOG_LEVEL", "debug")
    status, out, err = show(capsys, "--config", str(config_file), "--offline")
    assert status == 0, err
    encoded = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    for text in (SECRET, encoded, "hunter2"):
        assert text not in out
        assert text not in err
    document = yaml.safe_load(out)
    assert document["upstreams"][0]["password"] == REDACTED
    assert "password" not in document["upstreams"][1]
    assert (document["log_level"], document["offline"]) == ("debug", True)
    # The output is itself a file serve accepts, meaning the same but for the password.
    shown = tmp_path / "shown.yaml"
    shown.write_text(out, encoding="utf-8")
    effective = load_config(config_file, os.environ, CliOverrides(offline=True))
    assert load_config(shown, {}, CliOverrides()) == redacted(effective)


def test_defaults_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = show(capsys)
    assert status == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(out, encoding="utf-8")
    assert load_config(shown, {}, CliOverrides()) == Config()


def test_a_bad_config_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"upstreams:\n  - name: x.io\n    url: https://x.io\n    password: {SECRET}\n",
        encoding="utf-8",
    )
    status, out, err = show(capsys, "--config", str(path))
    assert status == 2
    assert out == ""
    assert err == (
        f"regcache: config error: {path} line 4: upstreams[0].password: is set but username "
        "is not\n"
    )


def test_secrets_are_declared_once_on_the_model() -> None:
    assert {f.name for f in fields(UpstreamConfig) if is_secret(f)} == {"password"}
    upstream = UpstreamConfig(name="x.io", url="https://x.io", username="a", password=SECRET)
    # Declared secret, so out of repr too: a logged config never shows one.
    assert SECRET not in repr(upstream)
    assert SECRET not in repr(Config(upstreams=(upstream,)))


def test_a_setting_declared_secret_is_redacted_by_that_mark() -> None:
    @dataclass(frozen=True)
    class Model:
        token_key_file: str = setting("", str, section=None, help="a key", secret=True)
        plain: str = setting("", str)

    (token, plain) = declared_settings(Model)
    assert (token.secret, plain.secret) == (True, False)
    assert [is_secret(f) for f in fields(Model)] == [True, False]
    assert "s3" not in repr(Model(token_key_file="s3", plain="x"))


def test_help_lists_config_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "config show" in capsys.readouterr().out


def test_logins_and_rules_round_trip_and_key_files_are_named_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bcrypt

    entry = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{entry}\n", encoding="utf-8")
    key = "k" * 40
    (tmp_path / "key").write_text(key, encoding="utf-8")
    path = tmp_path / "regcache.yaml"
    path.write_text(
        f"auth:\n  htpasswd: {tmp_path / 'htpasswd'}\n  anonymous: true\n"
        f"  token_key_file: {tmp_path / 'key'}\n"
        'access:\n  - repositories: ["docker.io/**"]\n    users: ["*"]\n',
        encoding="utf-8",
    )
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = capsys.readouterr().out
    assert entry not in shown
    assert key not in shown
    (tmp_path / "shown.yaml").write_text(shown, encoding="utf-8")
    again = load_config(tmp_path / "shown.yaml", {}, CliOverrides())
    assert again == load_config(path, {}, CliOverrides())
