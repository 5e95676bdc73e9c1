"""htpasswd logins: bcrypt checks off the event loop, successes remembered briefly.

A bcrypt check costs 100-250 ms of CPU by design; a pull with Basic credentials sends them
with every manifest and blob request, so a success is remembered for a minute, keyed by a
hash of user and password (never the password itself).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time

from proxy.config.authfiles import Htpasswd, parse_htpasswd
from proxy.config.parsers import Invalid

log = logging.getLogger(__name__)

REMEMBER_SECONDS = 60.0
MAX_REMEMBERED = 10_000


@functools.cache
def _dummy_hash() -> bytes:
    """Checked for unknown users, so a wrong user name costs as long as a wrong password.
    Made at the first login rather than at import: making it costs a bcrypt round, which
    every server and command paid at start, logins or not."""
    import bcrypt

    return bcrypt.hashpw(b"regcache", bcrypt.gensalt(rounds=10))


class PasswordChecker:
    def __init__(self, htpasswd: Htpasswd) -> None:
        self._path = htpasswd.path
        self._hashes = htpasswd.hashes
        self._remembered: dict[bytes, float] = {}

    def reload(self) -> None:
        """Re-read the htpasswd file (SIGHUP); a file that no longer parses keeps the old one."""
        try:
            hashes = parse_htpasswd(str(self._path)).hashes
        except Invalid as exc:
            log.error("htpasswd not reloaded, the previous users stay: %s", exc)
            return
        self._hashes = hashes
        # A removed user or a changed password must not live on as a remembered success.
        self._remembered.clear()
        log.info("htpasswd reloaded: %d users", len(hashes))

    def knows(self, user: str) -> bool:
        return user in self._hashes

    async def check(self, user: str, password: str) -> bool:
        key = hashlib.sha256(f"{user}\0{password}".encode("utf-8", "surrogatepass")).digest()
        now = time.monotonic()
        until = self._remembered.get(key)
        if until is not None and until > now and user in self._hashes:
            return True
        hashed = self._hashes.get(user)
        ok = await asyncio.to_thread(_checkpw, password, hashed) and user in self._hashes
        if ok:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._forget_expired(now)
            self._remembered[key] = now + REMEMBER_SECONDS
        return ok

    @property
    def remembered(self) -> int:
        return len(self._remembered)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, until in self._remembered.items() if until <= now]:
            del self._remembered[key]
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered.clear()  # a flood of distinct valid logins; bcrypt again


def _checkpw(password: str, hashed: bytes | None) -> bool:
    """``hashed`` None: an unknown user, checked against the dummy hash (in this thread: the
    first check makes it)."""
    import bcrypt

    if hashed is None:
        hashed = _dummy_hash()
    try:
        return bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), hashed)
    except ValueError:
        # A malformed hash after a bcrypt prefix: the entry cannot match anything.
        return False
