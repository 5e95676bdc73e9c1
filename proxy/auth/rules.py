"""Access rules: first match wins, no match is denied. Pure code.

A pattern ``docker.io/library/*`` names ``<upstream>/<repository>`` after routing; ``*``
matches within one path component and ``**`` any number of whole components.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config.access import AccessRule
from proxy.config.authfiles import ANONYMOUS
from proxy.model import Credentials

ANYONE = "*"
AUTHENTICATED = "authenticated"
# With logins on and no access: list, everyone let in (users, and anonymous when allowed)
# may pull everything.
DEFAULT_RULES = (AccessRule(("**",), (ANYONE,)),)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. ``scopes``: the repository names a bearer token was granted,
    as the client names them; None when the request was not made with a token.

    ``vouched_by``: the passthrough upstream that accepted the login, for a user regcache's
    htpasswd does not know; ``credentials`` are then that user's, for passthrough upstreams.
    """

    name: str
    authenticated: bool
    scopes: frozenset[str] | None = None
    vouched_by: str | None = None
    credentials: Credentials | None = None

    def on(self, passthrough: bool) -> Principal:
        """Who this is on an upstream: a login only a passthrough upstream vouched for is
        no regcache login, so elsewhere it counts as anonymous (an account anyone can open
        upstream must not unlock what regcache's own logins guard)."""
        if self.vouched_by is None or passthrough:
            return self
        return Principal(ANONYMOUS, authenticated=False, scopes=self.scopes)


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS, authenticated=False)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The pattern as a regex over ``/`` + the full name, so ``**`` can match no component."""
    pieces = []
    for component in pattern.split("/"):
        if component == "**":
            pieces.append("(?:/[^/]+)*")
        else:
            pieces.append("/" + "[^/]*".join(re.escape(p) for p in component.split("*")))
    return re.compile("".join(pieces))


@dataclass(frozen=True)
class _Compiled:
    patterns: tuple[re.Pattern[str], ...]
    users: frozenset[str]
    line: int | None


class AccessPolicy:
    def __init__(self, rules: Sequence[AccessRule] | None) -> None:
        self._rules = tuple(
            _Compiled(
                tuple(compile_pattern(p) for p in rule.repositories),
                frozenset(rule.users),
                rule.line,
            )
            for rule in (DEFAULT_RULES if rules is None else rules)
        )

    def allows(self, who: Principal, upstream: str, repository: str) -> bool:
        subject = f"/{upstream}/{repository}"
        for rule in self._rules:
            if any(pattern.fullmatch(subject) for pattern in rule.patterns):
                return _user_matches(who, rule.users)
        return False


def _user_matches(who: Principal, users: frozenset[str]) -> bool:
    if ANYONE in users:
        return True
    if who.authenticated and AUTHENTICATED in users:
        return True
    return who.name in users
