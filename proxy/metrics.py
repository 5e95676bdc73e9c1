"""Prometheus metrics for every stage of the data path.

Each application owns its own registry so that several proxies (tests, chained caches in
one process) never share counters.

The worker processes of one server (``--workers``) share theirs through prometheus-client's
multiprocess mode: each worker's values live in files of the supervisor's directory
(``share_between_processes``), and ``/metrics`` and the status page read them all, so that
whichever worker answers shows the server's sums. A gauge says how its workers' values
combine (``multiprocess_mode``); a dead worker's live gauges are dropped by the supervisor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(directory: Path) -> None:
    """Keep the values of the metrics made from now on, in this process and the ones it
    forks, in files under ``directory``, where every process's are read together."""
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus-client picks its value class when imported, long before a server decides.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def forget_process(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters still count)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, replica: str | None = None) -> None:
        """``replica``: a name every sample is labelled with, to tell apart the replicas of
        one fleet, whose series would otherwise be indistinguishable where scraped through
        one Service."""
        self.registry = CollectorRegistry()
        self.replica = replica
        # What is read: this process's registry, or every worker's values.
        self.source = self.registry
        if MULTIPROC_ENV in os.environ:
            self.source = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.source)  # type: ignore[no-untyped-call]
        self._declare_serving(self.registry)
        self._declare_upstream(self.registry)
        self._declare_cache(self.registry)
        self._declare_gauges(self.registry)
        self._declare_fleet(self.registry)
        self._declare_auth(self.registry)

    def _declare_serving(self, r: CollectorRegistry) -> None:
        self.cache_requests = counter(
            r,
            "regcache_cache_requests",
            "Manifest and blob requests by cache result",
            ("upstream", "kind", "result"),
        )
        self.served_bytes = counter(
            r,
            "regcache_served_bytes",
            "Body bytes sent to clients, by where they came from",
            ("source",),
        )

    def _declare_upstream(self, r: CollectorRegistry) -> None:
        self.upstream_requests = counter(
            r,
            "regcache_upstream_requests",
            "Requests sent to upstream registries (token endpoints included)",
            ("upstream", "method", "status"),
        )
        self.upstream_duration = histogram(
            r,
            "regcache_upstream_request_duration_seconds",
            "Time to the upstream's response headers",
            ("upstream",),
        )
        self.upstream_bytes = counter(
            r, "regcache_upstream_bytes", "Blob bytes received from upstreams", ("upstream",)
        )
        self.upstream_resumes = counter(
            r,
            "regcache_upstream_resumes",
            "Blob downloads continued with a Range request after the connection dropped",
            ("upstream",),
        )

    def _declare_cache(self, r: CollectorRegistry) -> None:
        self.dedup_joins = counter(
            r,
            "regcache_dedup_joins",
            "Requests that joined a download already under way instead of starting one",
            ("kind",),
        )
        self.digest_mismatch = counter(
            r,
            "regcache_digest_mismatch",
            "Upstream content whose bytes did not match its digest",
            ("upstream", "kind"),
        )
        self.stale_served = counter(
            r,
            "regcache_stale_served",
            "Cached manifests served without revalidation because the upstream failed",
            ("upstream",),
        )
        self.evictions = counter(
            r,
            "regcache_evictions",
            "Blobs and manifests evicted to keep within cache.max_size and cache.max_age",
            ("kind",),
        )
        self.evicted_bytes = counter(r, "regcache_evicted_bytes", "Bytes freed by eviction", ())
        self.prefetch_runs = counter(
            r,
            "regcache_prefetch_runs",
            "Scheduled prefetches of one image (prefetch: in the config), by result",
            ("result",),
        )
        self.prefetch_bytes = counter(
            r, "regcache_prefetch_bytes", "Blob bytes downloaded by scheduled prefetches", ()
        )
        self.s3_requests = counter(
            r,
            "regcache_s3_requests",
            "Calls of the S3 blob store, by operation and HTTP status (error: no answer)",
            ("op", "status"),
        )
        self.cache_write_failures = counter(
            r,
            "regcache_cache_write_failures",
            "Content served without being cached because writing it failed",
            ("reason",),
        )

    def _declare_gauges(self, r: CollectorRegistry) -> None:
        # Each worker measures the one cache; the last measure is the one to show.
        self.cache_size = gauge(
            r, "regcache_cache_size_bytes", "Bytes of blobs held in the cache", (), "livemostrecent"
        )
        self.inflight_downloads = gauge(
            r,
            "regcache_inflight_downloads",
            "Blob downloads from upstreams under way",
            (),
            "livesum",
        )
        self.ratelimit_remaining = gauge(
            r,
            "regcache_upstream_ratelimit_remaining",
            "Pulls left in the upstream's rate-limit window (Docker Hub's ratelimit-remaining)",
            ("upstream",),
            "livemostrecent",  # the upstream's latest word, whichever worker heard it
        )

    def _declare_fleet(self, r: CollectorRegistry) -> None:
        self.local_tier = counter(
            r,
            "regcache_local_tier_requests",
            "Reads of cached blobs by whether this replica's local tier held them",
            ("result",),
        )
        self.peer_stream_bytes = counter(
            r,
            "regcache_peer_stream_bytes",
            "Blob bytes streamed between replicas: sent to peers following a download this "
            "replica owns, or received from the owner",
            ("direction",),
        )
        self.lease_takeovers = counter(
            r,
            "regcache_lease_takeovers",
            "Downloads taken over from a replica (its lease expired) or a worker process (its "
            "lock was let go) that died mid-download",
            (),
        )
        self.lease_waits = counter(
            r,
            "regcache_lease_waits",
            "Work left to the replica holding its lease instead of done here, by kind",
            ("kind",),
        )

    def _declare_auth(self, r: CollectorRegistry) -> None:
        self.auth_logins = counter(
            r,
            "regcache_auth_logins",
            "Requests let in by a password (basic) and tokens issued for one (token)",
            ("method",),
        )
        self.auth_denied = counter(
            r, "regcache_auth_denied", "Requests refused by client auth, by reason", ("reason",)
        )

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels`` (0 when none)."""
        found = 0.0
        for family in self.source.collect():
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    found += sample.value
        return found

    def render(self) -> bytes:
        if self.replica is None:
            return generate_latest(self.source)
        return generate_latest(_Labelled(self.source, self.replica))


class _Labelled:
    """A registry's metrics with ``replica="<name>"`` added to every sample."""

    def __init__(self, registry: CollectorRegistry, replica: str) -> None:
        self._registry = registry
        self._replica = replica

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [
                sample._replace(labels={**sample.labels, "replica": self._replica})
                for sample in family.samples
            ]
            yield family


# One line per metric above; each is bound to the application's own registry.
def counter(r: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...]) -> Counter:
    return Counter(name, doc, labels, registry=r)


def gauge(r: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...], mode: str) -> Gauge:
    """``mode``: how the workers' values add up (prometheus-client's multiprocess_mode)."""
    return Gauge(name, doc, labels, registry=r, multiprocess_mode=mode)  # type: ignore[arg-type]


def histogram(r: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
    return Histogram(name, doc, labels, registry=r)
