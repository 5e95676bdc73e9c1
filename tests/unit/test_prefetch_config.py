"""The file's ``prefetch:`` list: parsed into the Config, each error one line naming its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, render
from proxy.config.prefetch import PrefetchRule
from tests.support.configfiles import load, load_error, write

GOOD = """
prefetch:
  - images: ["docker.io/library/alpine:3.20", "ghcr.io/acme/app:stable"]
    every: 6h
    platforms: [linux/amd64, linux/arm/v7]
  - images: [docker.io/busybox]
    every: 0.2
"""


def test_the_list_is_read_in_order(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.prefetch == (
        PrefetchRule(
            ("docker.io/library/alpine:3.20", "ghcr.io/acme/app:stable"),
            6 * 3600.0,
            ("linux/amd64", "linux/arm/v7"),
        ),
        PrefetchRule(("docker.io/busybox",), 0.2),
    )
    assert config.prefetch[0].line == 2
    assert Config().prefetch == ()


def test_config_show_round_trips_it(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    again = load(write(tmp_path, render(config), "shown.yaml"))
    assert again.prefetch == config.prefetch


@pytest.mark.parametrize(
    ("item", "line", "key", "reason"),
    [
        ("  - every: 1h", 2, "prefetch[0]", "the images key is missing"),
        ("  - images: [docker.io/a:1]", 2, "prefetch[0]", "the every key is missing"),
        ("  - images: [docker.io/a:1]\n    every: 1h\n    tag: x", 4, "prefetch[0].tag", "unknown"),
        ("  - images: [alpine]\n    every: 1h", 2, "prefetch[0].images[0]", "name the registry"),
        (
            "  - images: ['docker.io/a@sha256:" + "0" * 64 + "']\n    every: 1h",
            2,
            "prefetch[0].images[0]",
            "name a tag",
        ),
        ("  - images: [docker.io/a:1]\n    every: soon", 3, "prefetch[0].every", "not a duration"),
        (
            "  - images: [docker.io/a:1]\n    every: 1h\n    platforms: [amd64]",
            4,
            "prefetch[0].platforms[0]",
            "not a platform",
        ),
        ("  - images: [nowhere.io/a:1]\n    every: 1h", 1, "prefetch[0].images[0]", "any upstream"),
        ("  - [docker.io/a:1]", 2, "prefetch[0]", "must be a mapping"),
    ],
)
def test_errors_name_the_line_and_key(
    tmp_path: Path, item: str, line: int, key: str, reason: str
) -> None:
    error = load_error(write(tmp_path, f"prefetch:\n{item}\n"))
    assert error.line == line
    assert error.key == key
    assert reason in str(error)
