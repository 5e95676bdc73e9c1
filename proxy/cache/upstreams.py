"""Which identity speaks to the upstream for a request."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.routing import Target
from proxy.upstream.client import UpstreamClient


def client_for(clients: Mapping[str, UpstreamClient], target: Target) -> UpstreamClient:
    """The client for ``target``'s upstream. On a passthrough upstream it carries the
    requesting client's own credentials, or none: regcache's are never used for a client
    there, so the upstream decides what each client reads."""
    client = clients[target.upstream.name]
    if target.upstream.passthrough:
        return client.acting_for(target.credentials)
    return client
