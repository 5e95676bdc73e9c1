"""Scheduled prefetch: the config's ``prefetch:`` tags resolved again in the background, and
fetched through the cache when they moved, so an edge site has ``:stable`` before anyone
asks. Each run is counted in ``regcache_prefetch_runs_total{result}`` and its downloaded
bytes in ``regcache_prefetch_bytes_total``; the last run of each image is on the status page.

In a fleet every replica keeps the schedule, and each interval's run of an image is done by
one of them: the first to fire takes the image's lease for the run and, when done, leaves a
mark that lasts most of the interval. The others find either and skip the run (result
``elsewhere``). With Redis out of reach each replica runs its schedule on its own.

The worker processes of one server (``--workers``) share the run the same way through a file
per image in the cache directory: an exclusive ``flock`` on it while one worker runs it, and
its modification time as the mark of the run done.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import tasks
from proxy.cache.besteffort import or_miss
from proxy.cache.blobs import BlobCache
from proxy.cache.cachesource import CacheSource
from proxy.cache.images import point_tag, tag_keys
from proxy.cache.manifests import ANY_ACCEPT, ManifestCache
from proxy.cache.warming import Image, Silent, Warmer
from proxy.config.prefetch import PrefetchRule
from proxy.errors import RegistryError
from proxy.fleet.leases import Lease, Leases
from proxy.metrics import Metrics
from proxy.model import TagKey
from proxy.oci.contents import Platform
from proxy.routing import Router
from proxy.store import BlobStore, Index, IndexUnavailable

log = logging.getLogger(__name__)

# The first run waits this long after start (or one interval, if shorter): the server is
# up and answering before its upstreams are asked for anything of its own.
FIRST_RUN_AFTER = 5.0
# Blobs fetched at once for one image: enough to fill a link, few enough to leave the
# upstream's connections to clients.
BLOB_CONCURRENCY = 4
# The mark of a run done lasts this share of the interval: every other replica's schedule
# fires within the interval and skips, and the mark is gone before the next interval's run,
# whichever replica fires first then, even with the replicas' clocks a little apart.
RAN_SHARE = 0.9


@dataclass
class PrefetchState:
    """One image of the schedule, and how its last run went."""

    image: str
    rule: PrefetchRule
    last_run: float | None = None
    result: str | None = None  # ok | failed | elsewhere (another replica had this run)
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


class _Failed(Exception):
    """The warm's outcome named an error; the message is its reason."""


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
        leases: Leases | None = None,
        marks: Path | None = None,
    ) -> None:
        """``marks``: the directory of the run files of a worker of several."""
        self._leases = leases
        self._marks = marks
        self._schedule = [
            (rule, [PrefetchState(image, rule) for image in rule.images]) for rule in rules
        ]
        self.states = [state for _, states in self._schedule for state in states]
        self._router = router
        # A schedule follows tags: each run asks the upstream, whatever the tag's TTL.
        self._source = CacheSource(manifests, blobs, store, router, refresh=True)
        self._index = index
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for rule, states in self._schedule:
            self._tasks.append(asyncio.create_task(self._loop(rule, states)))

    async def stop(self) -> None:
        await tasks.stop_all(self._tasks)

    def status(self) -> list[dict[str, Any]]:
        return [state.status() for state in self.states]

    async def _loop(self, rule: PrefetchRule, states: list[PrefetchState]) -> None:
        await asyncio.sleep(min(rule.every, FIRST_RUN_AFTER))
        while True:
            for state in states:
                await self.run(state)
            await asyncio.sleep(rule.every)

    async def run(self, state: PrefetchState) -> None:
        """One run for one image, here unless another replica of the fleet has it."""
        if self._leases is None and self._marks is not None:
            return await self._run_in_one_worker(state, self._marks)
        if self._leases is None:
            return await self._run(state)
        name = f"prefetch:{state.image}"
        try:
            lease = await self._claim(self._leases, name)
        except IndexUnavailable:
            return await self._run(state)
        if lease is None:
            return self._elsewhere(state)
        async with lease.kept():
            await self._run(state)
            # Done, whatever the result: an upstream failing for one replica fails for the
            # others too, and the fleet asks it once per interval either way.
            with contextlib.suppress(IndexUnavailable):
                await self._leases.acquire(f"{name}:ran", ttl=state.rule.every * RAN_SHARE)
        return None

    async def _run_in_one_worker(self, state: PrefetchState, marks: Path) -> None:
        name = hashlib.sha256(state.image.encode()).hexdigest()[:32]
        fd = os.open(marks / f"prefetch-{name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._elsewhere(state)
            found = os.fstat(fd)
            # Empty until a first run: the file was made just now.
            if found.st_size and time.time() - found.st_mtime < state.rule.every * RAN_SHARE:
                return self._elsewhere(state)
            await self._run(state)
            os.pwrite(fd, f"{state.result}\n".encode(), 0)
            os.utime(fd)
        finally:
            os.close(fd)
        return None

    def _elsewhere(self, state: PrefetchState) -> None:
        state.last_run, state.result, state.error = time.time(), "elsewhere", None
        self._metrics.prefetch_runs.labels("elsewhere").inc()

    @staticmethod
    async def _claim(leases: Leases, name: str) -> Lease | None:
        """The lease for this interval's run; None when another replica runs it or ran it."""
        lease = await leases.acquire(name)
        if lease is not None and await leases.holder(f"{name}:ran") is not None:
            await lease.release()
            return None
        return lease

    async def _run(self, state: PrefetchState) -> None:
        """One run; a failure is recorded and logged, and the schedule goes on."""
        state.last_run = time.time()
        try:
            await self._follow(state)
        except (RegistryError, OSError, _Failed) as exc:
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
        # Unknown with the index out of reach: the run still warms, and points nothing.
        before = await or_miss(self._index.get_tag(any_key), "read a tag")
        platforms = [Platform.parse(text) for text in state.rule.platforms]  # checked at load
        warmer = Warmer(self._source, Silent(), platforms, BLOB_CONCURRENCY)
        outcome = await warmer.warm(Image.routed(target, reference))
        if outcome.error is not None:
            raise _Failed(outcome.error)
        assert outcome.digest is not None, "a warmed image has its manifest"
        self._metrics.prefetch_bytes.inc(outcome.blob_bytes_fetched())
        state.digest = str(outcome.digest)
        after = await or_miss(self._index.get_tag(any_key), "read a tag")
        if before is not None and after is not None and before.digest != after.digest:
            await point_tag(self._index, any_key, after, await tag_keys(self._index, any_key))
            log.info("prefetch: %s moved to %s", state.image, outcome.digest)

    def _failed(self, state: PrefetchState, reason: str) -> None:
        log.warning("prefetch of %s failed: %s", state.image, reason)
        state.result, state.error = "failed", reason
        self._metrics.prefetch_runs.labels("failed").inc()
