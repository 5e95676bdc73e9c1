"""Config files for the config tests: written from indented text, loaded with an environment
and flags, and the one error they must give."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from proxy.config import CliOverrides, Config, ConfigError, load_config

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
