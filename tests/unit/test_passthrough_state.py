"""Pass-through credentials at rest: in tokens, in the config, in anything printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest

from proxy.auth.rules import ANONYMOUS_PRINCIPAL, Principal
from proxy.auth.tokens import ALGORITHM, TokenAuthority, TokenRejected
from proxy.config import CliOverrides, Config, ConfigError, load_config
from proxy.config.authfiles import parse_token_key_file
from proxy.model import Credentials

SECRET = "hunter2-upstream"
VOUCHED = Principal("alice", True, vouched_by="ghcr.io", credentials=Credentials("alice", SECRET))


def _key(tmp_path: Path) -> bytes:
    return parse_token_key_file(str(_write(tmp_path))).secret


def test_a_token_carries_credentials_sealed(tmp_path: Path) -> None:
    authority = TokenAuthority(parse_token_key_file(str(_write(tmp_path))), ttl=60)
    issued = authority.issue(VOUCHED, ["ghcr.io/acme/app"])
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    # Neither the token nor its decoded claims show the password, in any encoding.
    for text in (issued.token, json.dumps(claims)):
        assert SECRET not in text
        assert base64.b64encode(SECRET.encode()).decode()[:12] not in text
    principal = authority.verify(issued.token)
    assert principal.credentials == Credentials("alice", SECRET)
    assert principal.vouched_by == "ghcr.io"
    assert SECRET not in repr(principal)


def test_a_signed_token_with_forged_credentials_is_refused(tmp_path: Path) -> None:
    authority = TokenAuthority(parse_token_key_file(str(_write(tmp_path))), ttl=60)
    claims = jwt.decode(authority.issue(VOUCHED, ["x"]).token, options={"verify_signature": False})
    for forged in ("not-fernet", base64.urlsafe_b64encode(b"x" * 80).decode(), 42):
        claims["pt"] = forged
        token = jwt.encode(claims, _key(tmp_path), algorithm=ALGORITHM)
        with pytest.raises(TokenRejected) as info:
            authority.verify(token)
        assert info.value.reason == "bad_token"


def test_sealed_credentials_open_only_under_the_same_key(tmp_path: Path) -> None:
    mine = TokenAuthority(parse_token_key_file(str(_write(tmp_path))), ttl=60)
    sealed = jwt.decode(mine.issue(VOUCHED, []).token, options={"verify_signature": False})
    key = b"t" * 32
    theirs = TokenAuthority(parse_token_key_file(str(_write(tmp_path, key))), ttl=60)
    claims = jwt.decode(
        theirs.issue(ANONYMOUS_PRINCIPAL, []).token, options={"verify_signature": False}
    )
    claims["pt"] = sealed["pt"]  # moved into a token the other key signs
    with pytest.raises(TokenRejected):
        theirs.verify(jwt.encode(claims, key, algorithm=ALGORITHM))


def test_a_vouched_login_is_anonymous_off_passthrough_upstreams() -> None:
    assert VOUCHED.on(passthrough=True) is VOUCHED
    elsewhere = VOUCHED.on(passthrough=False)
    assert not elsewhere.authenticated
    assert elsewhere.credentials is None
    regcache_user = Principal("alice", True)
    assert regcache_user.on(passthrough=False) is regcache_user


def _write(tmp_path: Path, key: bytes = b"s" * 32) -> Path:
    path = tmp_path / f"key-{key[:1].decode()}"
    path.write_bytes(key)
    return path


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "regcache.yaml"
    path.write_text(text)
    return load_config(path, {}, CliOverrides())


def test_the_config_names_passthrough_upstreams(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "default_upstream: ghcr.io\nupstreams:\n  - name: ghcr.io\n    url: https://ghcr.io\n"
        "    credentials: passthrough\n    passthrough_ttl: 5\n",
    )
    (ghcr,) = config.upstreams
    assert ghcr.passthrough
    assert ghcr.passthrough_ttl == 5
    assert config.logins_needed
    assert not config.auth_enabled


@pytest.mark.parametrize(
    ("value", "message"),
    [("forward", "must be one of configured, passthrough"), ("[1]", "must be a string")],
)
def test_a_bad_credentials_mode_names_its_line(tmp_path: Path, value: str, message: str) -> None:
    text = (
        "default_upstream: ghcr.io\nupstreams:\n  - name: ghcr.io\n    url: https://ghcr.io\n"
        f"    credentials: {value}\n"
    )
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert "line 5" in str(info.value)


def test_passthrough_alone_takes_the_token_settings(tmp_path: Path) -> None:
    key = _write(tmp_path)
    upstream = "upstreams:\n  - name: ghcr.io\n    url: https://ghcr.io\n"
    text = f"default_upstream: ghcr.io\nauth:\n  token_key_file: {key}\n  token_ttl: 60\n{upstream}"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert "is set but auth.htpasswd is not" in str(info.value)
    config = _load(tmp_path, text + "    credentials: passthrough\n")
    assert config.auth_token_key_file is not None
    assert config.auth_token_ttl == 60
