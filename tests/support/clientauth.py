"""Client logins for the fast tests: an htpasswd file, regcache configs with auth, headers."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import bcrypt

from proxy.config import UpstreamConfig
from proxy.config.access import AccessRule
from proxy.config.authfiles import TokenKey, parse_htpasswd, parse_token_key_file

from .inproxy import UPSTREAM_DEFAULTS, Answer

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
TOKEN_SECRET = b"k" * 40
CHALLENGE = re.compile(r'Bearer realm="(?P<realm>[^"]+)",service="regcache"(?P<rest>.*)')
# alice may pull acme's images on ghcr.io; everyone, anonymous included, Docker Hub's library.
RULES = (
    AccessRule(("ghcr.io/acme/**",), ("alice",)),
    AccessRule(("docker.io/library/**",), ("*",)),
)


def write_htpasswd(directory: Path, users: dict[str, str] = USERS) -> Path:
    path = directory / "htpasswd"
    # Cost 4: the cheapest bcrypt; the tests check logins, not the cost of guessing them.
    lines = [
        f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}" for u, p in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def token_key(directory: Path) -> TokenKey:
    path = directory / "token.key"
    path.write_bytes(TOKEN_SECRET)
    return parse_token_key_file(str(path))


def auth_settings(directory: Path, **changes: Any) -> dict[str, Any]:
    """make_proxy settings: logins on, upstreams docker.io and ghcr.io (alias gh) both the
    fake registry at ``url``, the RULES, anonymous allowed."""
    settings: dict[str, Any] = {
        "auth_htpasswd": parse_htpasswd(str(write_htpasswd(directory))),
        "auth_anonymous": True,
        "auth_token_key_file": token_key(directory),
        "access": RULES,
    }
    settings.update(changes)
    return settings


def two_upstreams(url: str) -> tuple[UpstreamConfig, ...]:
    return (
        UpstreamConfig(name="docker.io", url=url, **UPSTREAM_DEFAULTS),
        UpstreamConfig(name="ghcr.io", url=url, aliases=("gh",), **UPSTREAM_DEFAULTS),
    )


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_oci_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    document = answer.json()
    assert set(document) == {"errors"}
    assert document["errors"][0]["code"] == code
    assert "Traceback" not in answer.body.decode()
