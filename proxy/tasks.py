"""Stopping a background task for sure."""

from __future__ import annotations

import asyncio
from typing import Any

# How long one cancellation is given before it is sent again.
RETRY_CANCEL = 1.0


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended; raise its own failure, as awaiting it
    would, but not its cancellation.

    A task may swallow one cancellation and go on: a library that catches CancelledError on
    its way out, or on Python 3.11 an ``asyncio.timeout`` expiring as the cancellation
    arrives, which a loop waiting with a timeout takes for its own timeout. A background loop
    that lives on after its stop would hold up shutdown for good, so the cancellation is
    sent again until the task ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RETRY_CANCEL)
    if not task.cancelled():
        task.result()


async def stop_all(tasks: list[asyncio.Task[Any]]) -> None:
    """``stop`` each, all cancelled at once first so that they end side by side."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        await stop(task)
