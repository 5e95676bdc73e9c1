"""The status page's data: one JSON document built from the metrics and live state."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from proxy import __version__
from proxy.cache.usage import PullCounter
from proxy.metrics import Metrics
from proxy.server.handlers import Services

TOP_IMAGES = 10
RESULTS = ("hit", "miss", "revalidated", "stale", "error")
SAMPLE_EVERY = 5.0  # seconds
HISTORY_POINTS = 720  # an hour of samples


class History:
    """Hit ratio and bytes served from cache over the last hour, for the page's chart.

    Sampled by the server, so that a page opened now shows the hour before it.
    """

    def __init__(self) -> None:
        self.points: deque[dict[str, float | None]] = deque(maxlen=HISTORY_POINTS)

    def sample(self, metrics: Metrics) -> None:
        ratio, _ = _hit_ratio(metrics)
        saved = metrics.total("regcache_served_bytes_total", source="cache")
        self.points.append({"t": round(time.time(), 1), "hit_ratio": ratio, "from_cache": saved})

    async def run(self, metrics: Metrics) -> None:
        while True:
            self.sample(metrics)
            await asyncio.sleep(SAMPLE_EVERY)


def _hit_ratio(metrics: Metrics) -> tuple[float | None, dict[str, float]]:
    requests = {r: metrics.total("regcache_cache_requests_total", result=r) for r in RESULTS}
    answered = sum(requests.values()) - requests["error"]
    from_cache = answered - requests["miss"]
    return (from_cache / answered if answered else None), requests


def status_document(
    services: Services,
    pulls: PullCounter,
    history: History,
    started_at: float,
    cache_size: int,
) -> dict[str, Any]:
    metrics = services.metrics
    ratio, requests = _hit_ratio(metrics)
    return {
        "version": __version__,
        "uptime_seconds": round(time.time() - started_at, 1),
        "cache": {"size_bytes": cache_size},
        "requests": {**requests, "hit_ratio": ratio},
        "history": list(history.points),
        "bytes": {
            "from_cache": metrics.total("regcache_served_bytes_total", source="cache"),
            "from_upstream": metrics.total("regcache_served_bytes_total", source="upstream"),
        },
        "inflight": [
            {
                "digest": str(download.digest),
                "upstream": download.target.upstream.name,
                "repository": download.target.repository,
                "received": download.received,
                "size": download.size,
            }
            for download in services.blobs.downloads.in_flight()
        ],
        "top_images": [
            {"upstream": ref.upstream, "repository": ref.repository, "pulls": count}
            for ref, count in pulls.top(TOP_IMAGES)
        ],
        "upstreams": [
            {
                "name": name,
                "url": client.upstream.url,
                "healthy": client.health.healthy,
                "last_status": client.health.last_status,
                "last_error": client.health.last_error,
                "last_error_at": client.health.last_error_at,
                "requests": metrics.total("regcache_upstream_requests_total", upstream=name),
            }
            for name, client in services.clients.items()
        ],
    }
