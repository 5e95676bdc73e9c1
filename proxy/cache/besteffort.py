"""Index writes and reads that must not fail a pull: a full disk or a shared index out of
reach costs caching, never the response."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.metrics import Metrics
from proxy.store import INDEX_FAILURES, IndexUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


def failure_log(error: Exception) -> Callable[..., None]:
    """How loud to log an index failure: a shared index logs its outage itself, once, where
    every request would log it here."""
    return log.debug if isinstance(error, IndexUnavailable) else log.warning


async def best_effort(action: Awaitable[None], what: str, metrics: Metrics) -> bool:
    """Run ``action``; on a storage error log it, count it and carry on. True if it worked."""
    try:
        await action
    except INDEX_FAILURES as exc:
        metrics.cache_write_failures.labels("index").inc()
        failure_log(exc)("could not %s, serving without caching it: %s", what, exc)
        return False
    return True


async def or_miss(read: Awaitable[T | None], what: str) -> T | None:
    """Run the index ``read``; on a storage error log it and answer None, a miss, so that
    the upstream is asked instead."""
    try:
        return await read
    except INDEX_FAILURES as exc:
        failure_log(exc)("could not %s, asking the upstream: %s", what, exc)
        return None
