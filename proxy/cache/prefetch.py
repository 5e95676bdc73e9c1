"""Scheduled prefetch: the config's ``prefetch:`` tags resolved again in the background, and
fetched through the cache when they moved, so an edge site has ``:stable`` before anyone
asks. Each run is counted in ``regcache_prefetch_runs_total{result}`` and its downloaded
bytes in ``regcache_prefetch_bytes_total``; the last run of each image is on the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from proxy.cache.blobs import BlobCache
from proxy.cache.fetchimage import fetch_image
from proxy.cache.manifests import ANY_ACCEPT, ManifestCache
from proxy.config.prefetch import PrefetchRule
from proxy.errors import RegistryError
from proxy.metrics import Metrics
from proxy.model import TagKey
from proxy.oci.digest import Digest
from proxy.routing import Router
from proxy.store import BlobStore, Index

log = logging.getLogger(__name__)

# The first run waits this long after start (or one interval, if shorter): the server is
# up and answering before its upstreams are asked for anything of its own.
FIRST_RUN_AFTER = 5.0


@dataclass
class PrefetchState:
    """One image of the schedule, and how its last run went."""

    image: str
    rule: PrefetchRule
    last_run: float | None = None
    result: str | None = None  # ok | failed
    digest: str | None = None
    error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "every_seconds": self.rule.every,
            "platforms": list(self.rule.platforms),
            "last_run": self.last_run,
            "result": self.result,
            "digest": self.digest,
            "error": self.error,
        }


class Prefetcher:
    def __init__(
        self,
        rules: tuple[PrefetchRule, ...],
        router: Router,
        manifests: ManifestCache,
        blobs: BlobCache,
        store: BlobStore,
        index: Index,
        metrics: Metrics,
    ) -> None:
        self._schedule = [
            (rule, [PrefetchState(image, rule) for image in rule.images]) for rule in rules
        ]
        self.states = [state for _, states in self._schedule for state in states]
        self._router = router
        self._manifests = manifests
        self._blobs = blobs
        self._store = store
        self._index = index
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for rule, states in self._schedule:
            self._tasks.append(asyncio.create_task(self._loop(rule, states)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> list[dict[str, Any]]:
        return [state.status() for state in self.states]

    async def _loop(self, rule: PrefetchRule, states: list[PrefetchState]) -> None:
        await asyncio.sleep(min(rule.every, FIRST_RUN_AFTER))
        while True:
            for state in states:
                await self.run(state)
            await asyncio.sleep(rule.every)

    async def run(self, state: PrefetchState) -> None:
        """One run for one image; a failure is recorded and logged, and the schedule goes on."""
        state.last_run = time.time()
        try:
            await self._follow(state)
        except (RegistryError, OSError) as exc:
            self._failed(state, getattr(exc, "message", None) or str(exc))
        except Exception as exc:
            log.exception("prefetch of %s failed", state.image)
            self._failed(state, str(exc))
        else:
            state.result, state.error = "ok", None
            self._metrics.prefetch_runs.labels("ok").inc()

    async def _follow(self, state: PrefetchState) -> None:
        target, reference = self._router.route_image(state.image)
        assert reference.tag is not None, "checked when the config was loaded"
        any_key = TagKey(target.upstream.name, target.repository, reference.tag, ANY_ACCEPT)
        before = await self._index.get_tag(any_key)
        fetched = await fetch_image(
            self._manifests, self._blobs, self._store, target, reference, state.rule.platforms
        )
        self._metrics.prefetch_bytes.inc(fetched.fetched_bytes)
        state.digest = str(fetched.digest)
        if before is not None and before.digest != fetched.digest:
            await self._forget_old_answers(any_key, before.digest)
            log.info("prefetch: %s moved to %s", state.image, fetched.digest)

    async def _forget_old_answers(self, any_key: TagKey, old: Digest) -> None:
        """The tag's entries for other Accept lists that still name the old image: until
        their TTL ran out, and forever offline, clients with those lists would get it."""
        tag = (any_key.upstream, any_key.repository, any_key.tag)
        stale = [
            key
            async for key, entry in self._index.tags()
            if (key.upstream, key.repository, key.tag) == tag
            and key.accept != ANY_ACCEPT
            and entry.digest == old
        ]
        for key in stale:
            await self._index.delete_tag(key)

    def _failed(self, state: PrefetchState, reason: str) -> None:
        log.warning("prefetch of %s failed: %s", state.image, reason)
        state.result, state.error = "failed", reason
        self._metrics.prefetch_runs.labels("failed").inc()
