"""Opening the Redis a URL names: one server (``redis://``, ``rediss://``, ``unix://``, as
redis-py reads them), or the master a set of Sentinels knows under a service name:

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]

redis-py has no URL form for Sentinel; this is the one Harbor reads. The client asks the
Sentinels for the master again whenever a connection to it fails, so a failover costs the
requests of a few seconds, not a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxy.config.parsers import SENTINEL_SCHEME, parse_sentinel_url

if TYPE_CHECKING:
    from redis.asyncio import Redis


def open_redis(url: str, *, connect_timeout: float, command_timeout: float) -> Redis:
    """A client of the Redis ``url`` names; bytes in and out."""
    # Here, not at the top: only a server or command configured with Redis loads redis.
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel

    if urlsplit(url).scheme.lower() != SENTINEL_SCHEME:
        return Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
        )
    found = parse_sentinel_url(url)
    timeouts = {"socket_connect_timeout": connect_timeout, "socket_timeout": command_timeout}
    hosts = list(found.hosts)
    sentinels = Sentinel(hosts, sentinel_kwargs=timeouts, **timeouts)  # type: ignore[no-untyped-call]
    master: Redis = sentinels.master_for(
        found.service, db=found.db, password=found.password, decode_responses=False
    )
    return master
