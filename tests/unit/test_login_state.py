"""The in-memory state of logins: the failed-login window, remembered bcrypt successes, and
remembered tokens; each bounded, so a flood of clients cannot grow it without limit."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

import proxy.auth.ratelimit
from proxy.auth.passwords import PasswordChecker
from proxy.auth.ratelimit import FailureLimiter
from proxy.auth.rules import Principal
from proxy.auth.tokens import TokenAuthority, TokenRejected
from proxy.config.authfiles import Htpasswd


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("proxy.auth.ratelimit.time.monotonic", fake)
    return fake


async def test_failures_expire_after_the_window(clock: Clock) -> None:
    limiter = FailureLimiter(limit=3, window=60)
    for _ in range(3):
        assert await limiter.retry_after("10.0.0.1") is None
        await limiter.failed("10.0.0.1")
    assert await limiter.retry_after("10.0.0.1") == 60
    assert await limiter.retry_after("10.0.0.2") is None
    clock.now += 30
    assert await limiter.retry_after("10.0.0.1") == 30
    clock.now += 31
    assert await limiter.retry_after("10.0.0.1") is None


async def test_many_addresses_stay_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy.auth.ratelimit, "MAX_ADDRESSES", 10)
    limiter = FailureLimiter(limit=2, window=60)
    for index in range(50):
        await limiter.failed(f"10.0.0.{index}")
        clock.now += 0.1
    assert len(limiter._failures) <= 10
    clock.now += 120
    await limiter.failed("10.0.1.1")
    assert len(limiter._failures) <= 10


async def test_a_success_is_remembered_and_failures_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = {"alice": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))}
    checker = PasswordChecker(Htpasswd(tmp_path / "htpasswd", hashes))
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert await checker.check("alice", "pw")
    assert await checker.check("alice", "pw")
    assert len(calls) == 1
    assert not await checker.check("alice", "wrong")
    assert not await checker.check("alice", "wrong")
    assert not await checker.check("mallory", "pw")  # costs a check too: no user oracle
    assert len(calls) == 4
    assert checker.remembered == 1


async def test_an_unknown_user_is_refused_even_with_the_dummy_hash_password(
    tmp_path: Path,
) -> None:
    checker = PasswordChecker(Htpasswd(tmp_path / "h", {}))
    assert not await checker.check("mallory", "regcache")


async def test_a_malformed_bcrypt_hash_matches_nothing(tmp_path: Path) -> None:
    checker = PasswordChecker(Htpasswd(tmp_path / "h", {"bob": b"$2y$05$tooshort"}))
    assert not await checker.check("bob", "anything")


def test_tokens_are_remembered_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    authority = TokenAuthority(None, ttl=60)
    issued = authority.issue(Principal("alice", authenticated=True), ["library/app"])
    principal = authority.verify(issued.token)
    assert principal.scopes == frozenset({"library/app"})
    assert authority.verify(issued.token) is principal
    other = TokenAuthority(None, ttl=60)  # another random key
    with pytest.raises(TokenRejected):
        other.verify(issued.token)
    with pytest.raises(TokenRejected):
        authority.verify("x" * 10_000)
