"""Passthrough upstreams decide who reads their content, cached or not.

On an upstream with ``credentials: passthrough`` a request is served, from the cache or not,
only once that upstream has accepted the requesting client's own credentials (or its
anonymous access) for the repository. The question is a HEAD, under the client's identity,
of what the client asked for: a yes also confirms the repository references it
(references.py). The answer for (upstream, repository, client) is remembered for the
upstream's ``passthrough_ttl``, so a warm pull costs one HEAD per repository per ttl, and a
refused client is not let near the upstream again until then either.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from proxy.cache.references import MANIFEST_TYPES, References
from proxy.cache.singleflight import SingleFlight
from proxy.cache.upstreams import client_for
from proxy.errors import Denied, Unauthorized, UpstreamError
from proxy.model import Credentials, Kind
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.upstream.client import UpstreamClient

MAX_REMEMBERED = 10_000
# The login check names no repository: "" stands for /v2/ itself.
NO_REPOSITORY = ""

_Key = tuple[str, str, Credentials | None]
_Check = Callable[[], Awaitable[None]]


class Passthrough:
    def __init__(self, clients: Mapping[str, UpstreamClient], references: References) -> None:
        self._clients = clients
        self._references = references
        self._answers: dict[_Key, tuple[bool, float]] = {}
        self._asking: SingleFlight[bool] = SingleFlight()

    async def admit(self, target: Target, kind: Kind, reference: Reference) -> None:
        """Return if ``target``'s client may read ``reference`` there. Raise Unauthorized if
        the upstream refused it (now or within the ttl), or the upstream's other errors (404,
        unreachable...), which are not remembered."""
        if not target.upstream.passthrough:
            return
        key = (target.upstream.name, target.repository, target.credentials)
        accepted = self._remembered(key)
        if accepted is None:
            # Per object, not per repository: a 404 for one object must not answer another.
            flight = (key, kind, str(reference))
            accepted, _ = await self._asking.do(
                flight, lambda: self._ask(key, target, kind, reference)
            )
        if not accepted:
            raise Unauthorized(
                "the upstream refused the client", detail={"upstream": target.upstream.name}
            )

    async def vouch(self, credentials: Credentials) -> str | None:
        """The first passthrough upstream that accepts ``credentials`` at ``/v2/``, which is
        how a client logs in with them (``docker login``); None if none does. An upstream
        that cannot answer does not stop the others from being asked; its error is raised
        when no other accepted."""
        unanswered: UpstreamError | None = None
        for client in self._clients.values():
            if not client.upstream.passthrough:
                continue
            try:
                if await self._login(client, credentials):
                    return client.upstream.name
            except UpstreamError as error:
                unanswered = error
        if unanswered is not None:
            raise unanswered
        return None

    async def _login(self, client: UpstreamClient, credentials: Credentials) -> bool:
        key = (client.upstream.name, NO_REPOSITORY, credentials)
        accepted = self._remembered(key)
        if accepted is None:
            check = client.acting_for(credentials).ping
            ttl = client.upstream.passthrough_ttl
            accepted, _ = await self._asking.do(key, lambda: self._decide(key, ttl, check))
        return accepted

    async def _ask(self, key: _Key, target: Target, kind: Kind, reference: Reference) -> bool:
        async def check() -> None:
            if reference.digest is not None:
                await self._references.confirm(target, kind, reference.digest)
            else:
                client = client_for(self._clients, target)
                await client.head_manifest(target.repository, str(reference), MANIFEST_TYPES)

        return await self._decide(key, target.upstream.passthrough_ttl, check)

    async def _decide(self, key: _Key, ttl: float, check: _Check) -> bool:
        try:
            await check()
        except (Unauthorized, Denied):
            accepted = False
        else:
            accepted = True
        self._remember(key, accepted, ttl)
        return accepted

    def _remembered(self, key: _Key) -> bool | None:
        answer = self._answers.get(key)
        if answer is None or answer[1] <= time.monotonic():
            return None
        return answer[0]

    def _remember(self, key: _Key, accepted: bool, ttl: float) -> None:
        now = time.monotonic()
        if len(self._answers) >= MAX_REMEMBERED:
            self._answers = {k: a for k, a in self._answers.items() if a[1] > now}
            if len(self._answers) >= MAX_REMEMBERED:
                self._answers.clear()  # a flood of identities: ask the upstream again
        self._answers[key] = (accepted, now + ttl)
