"""Prometheus metrics for every stage of the data path.

Each application owns its own registry so that several proxies (tests, chained caches in
one process) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cache_requests = Counter(
            "regcache_cache_requests",
            "Manifest and blob requests by cache result",
            ["upstream", "kind", "result"],
            registry=r,
        )
        self.served_bytes = Counter(
            "regcache_served_bytes",
            "Body bytes sent to clients, by where they came from",
            ["source"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "regcache_upstream_requests",
            "Requests sent to upstream registries (token endpoints included)",
            ["upstream", "method", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "regcache_upstream_request_duration_seconds",
            "Time to the upstream's response headers",
            ["upstream"],
            registry=r,
        )
        self.upstream_bytes = Counter(
            "regcache_upstream_bytes",
            "Blob bytes received from upstreams",
            ["upstream"],
            registry=r,
        )
        self.upstream_resumes = Counter(
            "regcache_upstream_resumes",
            "Blob downloads continued with a Range request after the connection dropped",
            ["upstream"],
            registry=r,
        )
        self.cache_size = Gauge(
            "regcache_cache_size_bytes", "Bytes of blobs held in the cache", registry=r
        )
        self.inflight_downloads = Gauge(
            "regcache_inflight_downloads", "Blob downloads from upstreams under way", registry=r
        )
        self.dedup_joins = Counter(
            "regcache_dedup_joins",
            "Requests that joined a download already under way instead of starting one",
            ["kind"],
            registry=r,
        )
        self.digest_mismatch = Counter(
            "regcache_digest_mismatch",
            "Upstream content whose bytes did not match its digest",
            ["upstream", "kind"],
            registry=r,
        )

        self.stale_served = Counter(
            "regcache_stale_served",
            "Cached manifests served without revalidation because the upstream failed",
            ["upstream"],
            registry=r,
        )
        self.ratelimit_remaining = Gauge(
            "regcache_upstream_ratelimit_remaining",
            "Pulls left in the upstream's rate-limit window (Docker Hub's ratelimit-remaining)",
            ["upstream"],
            registry=r,
        )

        self.evictions = Counter(
            "regcache_evictions",
            "Blobs and manifests evicted to keep within cache.max_size and cache.max_age",
            ["kind"],
            registry=r,
        )
        self.evicted_bytes = Counter(
            "regcache_evicted_bytes", "Bytes freed by eviction", registry=r
        )

        self.cache_write_failures = Counter(
            "regcache_cache_write_failures",
            "Content served without being cached because writing it failed",
            ["reason"],
            registry=r,
        )

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels`` (0 when none)."""
        found = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    found += sample.value
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
