"""The ``regcache`` command line, in process and as a real ``python -m proxy`` subprocess."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxy
import proxy.server.app
import proxy.server.workers
from proxy.cli import main
from proxy.config import ENV_VARS, Config
from proxy.logs import TEXT_FORMAT, JsonFormatter

REPO = Path(__file__).resolve().parents[2]
SERVE_FLAGS = [
    "--config",
    "--listen",
    "--cache-dir",
    "--upstream",
    "--default-upstream",
    "--log-level",
    "--help",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's or CI's own REGCACHE_* settings must not leak into these tests.
    for var in list(os.environ):
        if var.startswith("REGCACHE_"):
            monkeypatch.delenv(var)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` in process runs one process whatever the CPUs: run_server is what is tested."""
    monkeypatch.setattr(proxy.server.workers, "worker_count", lambda config: 1)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Configs that `serve` handed to run_server, which is replaced by a recorder."""
    calls: list[Config] = []
    monkeypatch.setattr(proxy.server.app, "run_server", calls.append)
    return calls


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGCACHE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- serve ----------------------------------------------------------------------------------


def test_serve_with_defaults(served: list[Config]) -> None:
    assert main(["serve"]) == 0
    assert served == [Config()]


def test_serve_passes_every_option(served: list[Config], tmp_path: Path) -> None:
    status = main(
        [
            "serve",
            "--listen",
            "[::1]:6000",
            "--cache-dir",
            str(tmp_path),
            "--upstream",
            "x.io=https://x.io",
            "--upstream",
            "docker.io=http://mirror:5000",
            "--default-upstream",
            "x.io",
            "--log-level",
            "debug",
        ]
    )
    assert status == 0
    (config,) = served
    assert (config.listen_host, config.listen_port) == ("::1", 6000)
    assert config.cache_dir == tmp_path
    assert config.default_upstream == "x.io"
    assert config.log_level == "debug"
    assert config.upstream("x.io") is not None
    hub = config.upstream("docker.io")
    assert hub is not None
    assert hub.url == "http://mirror:5000"


def test_precedence_file_env_cli(
    served: list[Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "regcache.yaml"
    path.write_text('listen: "127.0.0.1:1001"\nlog_level: error\n', encoding="utf-8")
    monkeypatch.setenv("REGCACHE_LISTEN", "127.0.0.1:1002")
    assert main(["serve", "--config", str(path), "--listen", "127.0.0.1:1003"]) == 0
    assert main(["serve", "--config", str(path)]) == 0
    monkeypatch.delenv("REGCACHE_LISTEN")
    assert main(["serve", "--config", str(path)]) == 0
    assert [c.listen_port for c in served] == [1003, 1002, 1001]
    assert {c.log_level for c in served} == {"error"}


def test_serve_configures_logging(served: list[Config]) -> None:
    assert main(["serve", "--log-level", "warning"]) == 0
    root = logging.getLogger()
    assert root.level == logging.WARNING
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert handler.formatter is not None
    assert handler.formatter._fmt == TEXT_FORMAT


def test_serve_json_logs(served: list[Config]) -> None:
    assert main(["serve", "--log-format", "json"]) == 0
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert served[-1].log_format == "json"


def test_config_error_is_one_line_and_status_2(
    served: list[Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("log_level: info\nlisten: nope\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"regcache: config error: {path} line 2: listen: "
        "must be HOST:PORT, e.g. 0.0.0.0:5000 or [::1]:5000\n"
    )
    assert served == []


def test_env_error_names_the_variable(
    served: list[Config], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGCACHE_LOG_LEVEL", "loud")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith(
        "regcache: config error: environment variable REGCACHE_LOG_LEVEL: log_level: "
    )


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--upstream", "no-equals-sign"],
        ["serve", "--upstream", "=https://x.io"],
        ["serve", "--upstream", "x.io="],
        ["serve", "--bogus"],
        ["serve", "--listen"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(
    served: list[Config], args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert "usage: regcache" in capsys.readouterr().err
    assert served == []


def test_bad_upstream_option_explains_the_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--upstream", "x.io"]) == 2
    assert "argument --upstream: expected NAME=URL" in capsys.readouterr().err


def test_url_with_equals_sign_is_kept_whole(served: list[Config]) -> None:
    # Only the first "=" separates; the URL is then rejected for its query, not mangled.
    assert main(["serve", "--upstream", "x.io=https://x.io/?a=b"]) == 2
    assert served == []


def test_ctrl_c_before_the_server_takes_over(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(config: Config) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(proxy.server.app, "run_server", interrupted)
    assert main(["serve"]) == 130


# --- help and version -----------------------------------------------------------------------


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: regcache" in err
    assert "serve" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"regcache {proxy.__version__}\n"


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("usage: regcache", "pull-through caching proxy", "serve", "--version", "example"):
        assert text in out


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["serve", "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("flag", SERVE_FLAGS)
def test_serve_help_mentions_every_flag(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    # Listed as an option with its own help line, not just shown in the usage synopsis.
    assert re.search(rf"^  (-\w, )?{flag}\b", serve_help(capsys), re.MULTILINE)


@pytest.mark.parametrize("var", ENV_VARS)
def test_serve_help_mentions_every_env_var(capsys: pytest.CaptureFixture[str], var: str) -> None:
    assert var in serve_help(capsys)


def test_serve_help_explains_precedence_defaults_and_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = serve_help(capsys)
    order = ["built-in defaults", "YAML file", "environment variables", "command-line options"]
    positions = [out.index(text) for text in order]
    assert positions == sorted(positions)
    for text in ("0.0.0.0:5000", "regcache-cache", "docker.io", "info", "debug,info,warning,error"):
        assert text in out
    assert "example:\n  regcache serve --config" in out
    assert "config/regcache.example.yaml" in out


# --- as a real process ----------------------------------------------------------------------


def test_module_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "upstreams:\n  - name: docker.io\n    url: ftp://registry-1.docker.io\n", encoding="utf-8"
    )
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"regcache: config error: {path} line 3: upstreams[0].url: "
        "must be an http:// or https:// URL\n"
    )


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_module_unreadable_config_exits_2_without_traceback(tmp_path: Path, name: str) -> None:
    result = run("serve", "--config", str(tmp_path / name))
    assert result.returncode == 2
    assert result.stderr.startswith("regcache: config error: ")
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_module_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: [oops\n", encoding="utf-8")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"regcache: config error: {path} line 2: invalid YAML: ")
    assert "Traceback" not in result.stderr


def test_module_without_arguments_prints_help() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: regcache" in result.stderr


def test_module_version_and_help() -> None:
    assert run("--version").stdout == f"regcache {proxy.__version__}\n"
    result = run("serve", "--help")
    assert result.returncode == 0
    assert all(flag in result.stdout for flag in SERVE_FLAGS)


def test_console_script_points_at_main() -> None:
    with (REPO / "pyproject.toml").open("rb") as file:
        scripts = tomllib.load(file)["project"]["scripts"]
    assert scripts["regcache"] == "proxy.cli:main"
