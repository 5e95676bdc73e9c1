"""Index writes that must not fail a pull: a full disk costs caching, never the response."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable

from proxy.metrics import Metrics

log = logging.getLogger(__name__)


async def best_effort(action: Awaitable[None], what: str, metrics: Metrics) -> bool:
    """Run ``action``; on a storage error log it, count it and carry on. True if it worked."""
    try:
        await action
    except (OSError, sqlite3.Error) as exc:
        metrics.cache_write_failures.labels("index").inc()
        log.warning("could not %s, serving without caching it: %s", what, exc)
        return False
    return True
