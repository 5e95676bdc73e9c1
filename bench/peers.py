"""The upstream and the proxies under comparison, each a real process on 127.0.0.1.

Every peer can be restarted cold (its cache emptied) so each cold-pull row starts from
nothing, and says which process ids make up its resident memory.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.support.httpclient import http_get
from tests.support.process import ServerProcess, ServerProcessError
from tests.support.regcache import RegcacheProcess
from tests.support.registry import Registry

from .nginx import HEALTH_PATH, render_config
from .prereqs import which
from .procfs import children_by_parent, command_line

# The upstream name regcache gives to the single upstream; repositories with two or more
# components ("bench/app") go to it without a "library/" prefix.
REGCACHE_UPSTREAM = "docker.io"


class Peer(abc.ABC):
    """Something skopeo and the load generators can pull from."""

    name: str
    description: str

    @property
    @abc.abstractmethod
    def host(self) -> str:
        """``127.0.0.1:PORT``."""

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repository: str, tag: str) -> str:
        return f"{self.host}/{repository}:{tag}"

    def client_ref(self, client: int, repository: str, tag: str) -> str:
        """What the ``client``-th of several concurrent clients pulls (a fleet spreads them)."""
        return self.ref(repository, tag)

    @abc.abstractmethod
    def start_cold(self) -> None:
        """(Re)start with an empty cache."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    def memory_pids(self) -> dict[int, str]:
        """The processes whose peak RSS is the proxy's, with a label for each."""
        return {}

    def cpu_pids(self) -> list[int]:
        """The processes whose CPU time is the serving side's."""
        return list(self.memory_pids())


class Upstream:
    """The one real registry every peer pulls from; its access log counts what they asked."""

    def __init__(self, work_dir: Path) -> None:
        self.registry = Registry(work_dir=work_dir)

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def url(self) -> str:
        return self.registry.url

    def start(self) -> None:
        self.registry.start()

    def stop(self) -> None:
        self.registry.stop()


class Direct(Peer):
    """No proxy: skopeo and the load generators talk to the upstream itself."""

    name = "direct"
    description = "skopeo straight from the upstream (Distribution, filesystem storage)"

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    @property
    def host(self) -> str:
        return self._upstream.host

    def start_cold(self) -> None:
        """The upstream holds the images; nothing to empty."""

    def stop(self) -> None:
        """The upstream outlives the peers."""

    def cpu_pids(self) -> list[int]:
        pid = self._upstream.registry.pid
        return [] if pid is None else [pid]


class Regcache(Peer):
    name = "regcache"
    description = "python -m proxy serve (this checkout), default settings"

    def __init__(
        self,
        upstream: Upstream,
        work_dir: Path,
        event_loop: str | None = None,
        workers: int | None = None,
    ) -> None:
        """``workers``: None runs the server's default, one worker per CPU."""
        config: dict[str, Any] = {
            "upstreams": [{"name": REGCACHE_UPSTREAM, "url": upstream.url}],
            "default_upstream": REGCACHE_UPSTREAM,
        }
        if event_loop is not None:
            config["event_loop"] = event_loop
            self.description += f", event_loop: {event_loop}"
        if workers is not None:
            config["workers"] = workers
            self.description += f", workers: {workers}"
        self.process = RegcacheProcess(
            config, work_dir=work_dir, cache_dir=work_dir / "cache", default_workers=True
        )

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start_cold(self) -> None:
        self.process.stop()
        shutil.rmtree(self.process.cache_dir, ignore_errors=True)
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def memory_pids(self) -> dict[int, str]:
        """The server and its children: with ``--workers N`` each worker is a process."""
        pid = self.process.pid
        if pid is None:
            return {}
        return {pid: "regcache"} | {child: f"regcache child {child}" for child in _children(pid)}

    def event_loop(self) -> str | None:
        """What the server said it runs on ("uvloop" or "asyncio")."""
        for line in self.process.log_text().splitlines():
            if "event loop:" in line:
                return line.rsplit("event loop:", 1)[1].strip()
        return None


class DistributionProxy(Peer):
    name = "distribution"
    description = "Debian docker-registry with proxy: remoteurl: (pull-through cache mode)"

    def __init__(self, upstream: Upstream, work_dir: Path) -> None:
        self.registry = Registry(work_dir=work_dir, proxy_remote=upstream.url)

    @property
    def host(self) -> str:
        return self.registry.host

    def start_cold(self) -> None:
        self.registry.stop()
        shutil.rmtree(self.registry.storage_dir, ignore_errors=True)
        self.registry.storage_dir.mkdir(parents=True)
        self.registry.start()

    def stop(self) -> None:
        self.registry.stop()

    def memory_pids(self) -> dict[int, str]:
        pid = self.registry.pid
        return {} if pid is None else {pid: "docker-registry"}


class NginxError(ServerProcessError):
    pass


class NginxProcess(ServerProcess):
    """``nginx -c CONF -p PREFIX -g 'daemon off;'``: the master stays our child, so the
    harness's stop() (SIGTERM, a fast shutdown) ends it and its workers."""

    label = "nginx"
    error_type = NginxError

    def __init__(self, upstream_host: str, work_dir: Path) -> None:
        super().__init__(work_dir=work_dir, port=None, startup_timeout=15.0, log_name="stderr.log")
        self.cache_dir = self.work_dir / "cache"
        self.config_path = self.work_dir / "nginx.conf"
        self.config_path.write_text(
            render_config(
                prefix=self.work_dir,
                cache_dir=self.cache_dir,
                listen_port=self.port,
                upstream_host=upstream_host,
            )
        )

    def argv(self) -> list[str]:
        binary = which("nginx")
        if binary is None:
            raise NginxError("nginx is not installed (apt-get install nginx)")
        return [binary, "-c", str(self.config_path), "-p", f"{self.work_dir}/", "-g", "daemon off;"]

    def before_start(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        try:
            return http_get(self.url + HEALTH_PATH, timeout=2).status == 200
        except OSError:
            return False

    def check_config(self) -> None:
        argv = [*self.argv()[:-2], "-t"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NginxError(f"nginx -t rejected {self.config_path}:\n{done.stderr}")


class Nginx(Peer):
    name = "nginx"
    description = "Debian nginx, proxy_cache keyed by blob digest, proxy_cache_lock on"

    def __init__(self, upstream: Upstream, work_dir: Path) -> None:
        self.process = NginxProcess(upstream.host, work_dir)

    @property
    def host(self) -> str:
        return self.process.host

    def start_cold(self) -> None:
        self.process.stop()
        shutil.rmtree(self.process.cache_dir, ignore_errors=True)
        self.process.check_config()
        self.process.start()

    def stop(self) -> None:
        master = self.process.pid
        children = _children(master) if master is not None else {}
        self.process.stop()
        _kill_leftovers(children)

    def memory_pids(self) -> dict[int, str]:
        """The workers only: the master and the cache loader/manager hold no request state."""
        master = self.process.pid
        if master is None:
            return {}
        return {
            pid: f"nginx worker {pid}"
            for pid, cmdline in _children(master).items()
            if "worker process" in cmdline
        }


def _children(parent: int) -> dict[int, str]:
    """Direct children of ``parent`` with their command lines."""
    found = {pid: command_line(pid) for pid in children_by_parent().get(parent, [])}
    return {pid: line for pid, line in found.items() if line is not None}


def _kill_leftovers(processes: dict[int, str]) -> None:
    """Workers outlive a master that died hard; none may keep serving after the benchmark."""
    for pid, cmdline in processes.items():
        # Gone, as it should be; or the pid was reused by the time we look: only ours is killed.
        if command_line(pid) == cmdline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
