"""``regcache ls``, ``rm`` and ``prune`` as the command line runs them: statuses and usage
errors, on an empty cache directory (tests/fast/test_manage.py fills one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli import main


def test_an_empty_cache_lists_nothing_and_prunes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = str(tmp_path / "cache")
    assert main(["ls", "--json", "--cache-dir", cache]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["prune", "--dry-run", "--json", "--cache-dir", cache]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "would remove 0 images, 0 manifests, 0 blobs: 0 B would be freed" in captured.err


def test_rm_of_an_image_not_cached_is_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rm", "docker.io/alpine:3.20", "--cache-dir", str(tmp_path)]) == 1
    assert "docker.io/library/alpine:3.20: not in the cache" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--older-than", "soon"],
        ["ls", "--config", "/nonexistent/regcache.yaml"],
        ["rm", "docker.io/x:1", "--config", "/nonexistent/regcache.yaml"],
        ["prune", "--config", "/nonexistent/regcache.yaml"],
    ],
)
def test_usage_and_config_errors_are_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("regcache: ")
