"""Headless Chromium (Debian's ``chromium``) for looking at the status page as a person would."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# Background networking off: this machine reaches no internet, and Chromium would try.
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
    # Lets the page's fetch and timers run before the DOM is read or the picture taken.
    "--virtual-time-budget=5000",
]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    raise RuntimeError("the status page tests need Debian's chromium (apt-get install chromium)")


def _run(args: list[str], timeout: float = 60) -> str:
    with tempfile.TemporaryDirectory(prefix="regcache-chromium-") as profile:
        proc = subprocess.run(
            [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def dump_dom(url: str) -> str:
    """The page's DOM after its scripts ran."""
    return _run(["--dump-dom", url])


def screenshot(url: str, path: Path) -> Path:
    _run([f"--screenshot={path}", url])
    return path
