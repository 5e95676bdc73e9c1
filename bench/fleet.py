"""regcache as a fleet: N ``python -m proxy serve`` replicas sharing one Redis and one S3
bucket (a throw-away Ceph cluster), measured as one more peer.

Cold pulls spread their clients over the replicas; the warm scenarios read from the first
replica, which has no blob on its own disk and so serves it from the bucket.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ceph import CephCluster
from tests.support.redisserver import RedisServer
from tests.support.replicas import Replicas, SharedBackends

from .peers import REGCACHE_UPSTREAM, Peer, Upstream

BUCKET = "regcache-bench"


class Fleet(Peer):
    def __init__(self, upstream: Upstream, work_dir: Path, count: int) -> None:
        self.name = f"regcache-x{count}"
        self.description = (
            f"{count} x python -m proxy serve sharing redis-server and a Ceph RGW bucket; "
            "cold-pull clients spread over the replicas, warm reads from the first"
        )
        self.count = count
        self._upstream = upstream
        self._work_dir = work_dir
        self._redis: RedisServer | None = None
        self._ceph: CephCluster | None = None
        self.replicas: Replicas | None = None
        self._starts = 0

    @property
    def host(self) -> str:
        return self._running().replicas[0].host

    def client_ref(self, client: int, repository: str, tag: str) -> str:
        replicas = self._running().replicas
        return f"{replicas[client % len(replicas)].host}/{repository}:{tag}"

    def _running(self) -> Replicas:
        if self.replicas is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.replicas

    def start_cold(self) -> None:
        """New replicas on new key prefixes: cold, with the backends' start paid once."""
        if self._redis is None:
            self._redis = RedisServer(work_dir=self._work_dir / "redis")
            self._redis.start()
        if self._ceph is None:
            self._ceph = CephCluster()
            self._ceph.start()
            self._ceph.create_bucket(BUCKET)
        if self.replicas is not None:
            self.replicas.close()
        self._starts += 1
        backends = SharedBackends.fresh(self._redis.url, self._ceph.endpoint, BUCKET)
        self.replicas = Replicas(
            self._upstream.url,
            backends,
            self._work_dir / f"run{self._starts}",
            count=self.count,
            # With a local tier, as the README advises for a fleet: warm blobs then go out
            # with sendfile from the replica's disk rather than through it from the bucket.
            settings={"default_upstream": REGCACHE_UPSTREAM, "storage": {"local_tier": "4GiB"}},
        )
        self.replicas.start()

    def stop(self) -> None:
        if self.replicas is not None:
            self.replicas.close()
            self.replicas = None
        if self._ceph is not None:
            self._ceph.close()
            self._ceph = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def memory_pids(self) -> dict[int, str]:
        if self.replicas is None:
            return {}
        return {r.pid: f"regcache {r.config['replica']['name']}" for r in self.replicas if r.pid}

    def cpu_pids(self) -> list[int]:
        """The replicas and what they share: Redis and the Ceph daemons work for them too."""
        shared = []
        if self._redis is not None:
            shared.append(self._redis.pid)
        if self._ceph is not None:
            shared += [d.pid for d in (self._ceph.mon, self._ceph.osd, self._ceph.rgw)]
        return [*self.memory_pids(), *(pid for pid in shared if pid is not None)]
