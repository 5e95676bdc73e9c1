"""Several ``python -m proxy serve`` processes sharing one Redis and one S3 bucket: a fleet.

Each replica has its own port, cache_dir and name (r0, r1, ...), advertises
``http://127.0.0.1:<port>`` to the others, and all share one replica secret. The Redis key
prefix and the bucket's key prefix are the fleet's own, so fleets of several tests may share
one redis-server and one gateway and still each start cold.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import redis

from .ceph import S3Endpoint
from .lifecycle import Started
from .ports import free_port
from .regcache import RegcacheProcess, upstream_entry
from .waiting import wait_until

# Long enough that no tag is revalidated during a test: counts of upstream requests then
# only show blob and manifest fetches.
TAG_TTL = 3600


@dataclass(frozen=True)
class SharedBackends:
    """Where a fleet keeps what it shares: a Redis (under ``redis_prefix``) and a bucket
    (under ``s3_prefix``)."""

    redis_url: str
    s3: S3Endpoint
    bucket: str
    redis_prefix: str
    s3_prefix: str

    @classmethod
    def fresh(cls, redis_url: str, s3: S3Endpoint, bucket: str) -> SharedBackends:
        """New prefixes: a fleet that starts cold whatever else these servers hold."""
        tag = uuid.uuid4().hex[:12]
        return cls(redis_url, s3, bucket, f"fleet-{tag}:", f"fleet-{tag}/")

    def s3_client(self) -> Any:
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.s3.url,
            region_name=self.s3.region,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
        )

    def bucket_bytes(self) -> int:
        """The total size of the objects under the fleet's prefix."""
        client = self.s3_client()
        total = 0
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.s3_prefix
            ):
                total += sum(item["Size"] for item in page.get("Contents", []))
        finally:
            client.close()
        return total

    def lease_holder(self, name: str) -> str | None:
        """The replica named in the lease ``name`` (e.g. ``blob:sha256:...``), if held."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            value = client.get(f"{self.redis_prefix}lease:{name}")
        finally:
            client.close()
        return None if value is None else str(json.loads(value)["replica"])


class Replicas(Started):
    """``count`` replicas of one fleet in front of the upstream at ``upstream_url``.

    ``settings`` are merged into every replica's config (e.g. ``{"cache": {"max_size": N}}``).
    """

    def __init__(
        self,
        upstream_url: str,
        backends: SharedBackends,
        work_dir: Path,
        *,
        count: int = 3,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.backends = backends
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.secret_file = work_dir / "replica-secret"
        self.secret_file.write_bytes(base64.b64encode(secrets.token_bytes(48)))
        self._keys = (work_dir / "s3-access-key", work_dir / "s3-secret-key")
        self._keys[0].write_text(backends.s3.access_key)
        self._keys[1].write_text(backends.s3.secret_key)
        self.replicas: list[RegcacheProcess] = []
        for i in range(count):
            port = free_port()
            config = self._config(f"r{i}", port, upstream_url, settings or {})
            self.replicas.append(RegcacheProcess(config, work_dir=work_dir / f"r{i}", port=port))

    def _config(
        self, name: str, port: int, upstream_url: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        shared = self.backends
        config: dict[str, Any] = {
            "upstreams": [upstream_entry("docker.io", upstream_url, tag_ttl=TAG_TTL)],
            "index": {
                "backend": "redis",
                "redis": {"url": shared.redis_url, "prefix": shared.redis_prefix},
            },
            "storage": {
                "backend": "s3",
                "s3": {
                    "endpoint": shared.s3.url,
                    "bucket": shared.bucket,
                    "region": shared.s3.region,
                    "prefix": shared.s3_prefix,
                    "access_key_id_file": str(self._keys[0]),
                    "secret_access_key_file": str(self._keys[1]),
                },
            },
            "replica": {
                "name": name,
                "advertise_url": f"http://127.0.0.1:{port}",
                "secret_file": str(self.secret_file),
            },
        }
        for key, value in settings.items():
            if isinstance(value, Mapping) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def __getitem__(self, i: int) -> RegcacheProcess:
        return self.replicas[i]

    def __iter__(self) -> Iterator[RegcacheProcess]:
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def named(self, name: str) -> RegcacheProcess:
        return next(r for r in self.replicas if r.config["replica"]["name"] == name)

    def start(self) -> None:
        """All at once: each start is mostly a Python interpreter importing the proxy."""
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            for started in [pool.submit(r.start) for r in self.replicas]:
                started.result()

    def restart_on_empty_disk(self, replica: RegcacheProcess) -> None:
        """Stop it and start it again on a new, empty cache_dir (a pod on a new volume)."""
        replica.stop()
        replica.cache_dir = replica.work_dir / f"cache-{uuid.uuid4().hex[:8]}"
        replica.start()

    def running(self) -> list[RegcacheProcess]:
        return [r for r in self.replicas if r.running]

    def metric(self, name: str, **labels: str) -> float:
        """A metric summed over the running replicas."""
        return sum(r.metric(name, **labels) for r in self.running())

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every running replica's /readyz reaches both Redis and the bucket again."""

        def ready() -> bool:
            try:
                return all(r.get("/readyz").body == b"ready\n" for r in self.running())
            except OSError:
                return False

        wait_until(ready, "every replica to reach Redis and S3", timeout)

    def logs(self) -> str:
        return "\n".join(
            f"--- {r!r} log (last 20000 chars) ---\n{r.log_text()[-20000:]}" for r in self.replicas
        )

    def close(self) -> None:
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda r: r.stop(), self.replicas))
