"""``regcache warm`` and ``regcache unpin`` on the command line: lists, usage errors, statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.commands.warm import read_image_list


def test_an_image_list_skips_blank_lines_and_comments() -> None:
    text = "# base images\n\ndocker.io/library/alpine:3.20\n  ghcr.io/acme/app:stable  # ours\n"
    assert read_image_list(text) == ["docker.io/library/alpine:3.20", "ghcr.io/acme/app:stable"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alpine:3.20"], "'alpine:3.20': name the registry, e.g. docker.io/library/alpine:3.20"),
        (["nowhere.io/app:1"], "'nowhere.io/app:1': no upstream is named 'nowhere.io'"),
        (["docker.io/Alpine"], "'docker.io/Alpine': "),
        (["--platform", "linux", "docker.io/alpine"], "--platform 'linux': expected OS/ARCH"),
        (
            ["--platform", "linux/amd64", "--all-platforms", "docker.io/alpine"],
            "--platform and --all-platforms contradict each other",
        ),
        (["--concurrency", "0", "docker.io/alpine"], "--concurrency must be at least 1"),
        (["--pin", "--server", "http://cache:5000", "docker.io/alpine"], "--pin works on the"),
        ([], "name at least one IMAGE, or a --file of them"),
        (["--file", "/nonexistent/list"], "--file /nonexistent/list: "),
    ],
)
def test_usage_errors_are_one_line_and_status_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["warm", "--cache-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"regcache: {message}")
    assert err.count("\n") == 1


def test_images_from_a_file_are_checked_like_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# comment\ndocker.io/library/alpine:3.20\nbad//name\n")
    assert main(["warm", "--cache-dir", str(tmp_path), "--file", str(listing)]) == 2
    assert "'bad//name'" in capsys.readouterr().err


def test_an_unreachable_upstream_fails_the_image_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "regcache.yaml"
    config.write_text(
        "upstreams:\n  - name: docker.io\n    url: http://127.0.0.1:9\n    connect_timeout: 1\n"
    )
    argv = ["warm", "--config", str(config), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "docker.io/library/alpine:3.20"]) == 1
    out, err = capsys.readouterr()
    assert "warm docker.io/library/alpine:3.20 failed: UNAVAILABLE: " in err
    assert "total: 1 images" in out
    assert "1 failed" in out


def test_unpin_names_what_was_not_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["unpin", "--cache-dir", str(tmp_path), "docker.io/alpine"]) == 1
    assert (
        capsys.readouterr().err == "regcache: unpin docker.io/library/alpine:latest: not pinned\n"
    )
    assert main(["unpin", "--cache-dir", str(tmp_path), "alpine"]) == 2
