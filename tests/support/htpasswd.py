"""An htpasswd file as Debian's ``htpasswd -bB`` writes it: ``$2y$`` bcrypt entries, what an
operator following the README would hand regcache."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path


def htpasswd_file(directory: Path, users: Mapping[str, str]) -> Path:
    path = directory / "htpasswd"
    for index, (user, password) in enumerate(users.items()):
        # Cost 5: cheap enough for tests that log in many times, still a real bcrypt entry.
        argv = ["htpasswd", "-bB", "-C", "5", *(["-c"] if index == 0 else []), str(path)]
        subprocess.run([*argv, user, password], check=True, capture_output=True)
    assert path.read_text().count("$2y$") == len(users)
    return path
