"""A throw-away single-node Ceph cluster with the RADOS Gateway, for the S3 blob store's tests.

One monitor, one OSD keeping its objects in RAM (memstore) and radosgw with the beast
frontend, all on 127.0.0.1, run from Debian's packages without systemd. Everything lives
under one temporary directory and dies with SIGKILL: nothing in it is worth a clean stop.
See issue 12, "S3 servers for the tests", for why each setting in ``CONF`` is there.

``python3 -m tests.support.ceph`` starts one and prints its endpoint and keys, for poking at
it by hand.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session

from .lifecycle import Started
from .process import ServerProcess

PACKAGES = ("radosgw", "ceph-mon", "ceph-osd", "ceph-common")

CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
# radosgw otherwise insists on a secure monitor session and loops on an auth error.
ms mon client mode = crc secure
# The default of 1 s makes every map change, and so the start, take about 12 s.
paxos propose interval = 0.05
# One OSD: the default pool size and placement-group count exceed what it can hold.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# A killed gateway's watches outlive it by this long, and until they lapse every change of a
# bucket waits for its answer: 30 s by default, after each staged outage.
osd client watch timeout = 2
osd objectstore = memstore
memstore device bytes = 2147483648
rgw multipart min part size = {min_part_size}
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
keyring = {root}/keyring
mon data = {root}/mon/$id
osd data = {root}/osd/$id
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
"""

# S3's minimum is 5 MiB; a small one lets the tests' small blobs go up in several parts.
MIN_PART_SIZE = 4096
ACCESS_KEY = "regcachetest"
SECRET_KEY = "regcachetestsecret"


class CephError(RuntimeError):
    pass


def port_outside_ephemeral_range() -> int:
    """A free port below the kernel's ephemeral range: radosgw failed to bind inside it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CephError("no free port below the ephemeral range")


class CephDaemon(ServerProcess):
    """One daemon in the foreground; ready when ``ready_check`` says so."""

    error_type = CephError

    def __init__(self, cluster: CephCluster, label: str, argv: list[str], port: int) -> None:
        super().__init__(
            work_dir=cluster.root / "log",
            port=port,
            startup_timeout=60,
            log_name=f"{label}.out",
        )
        self.label = label
        self._argv = argv
        self._cluster = cluster

    def argv(self) -> list[str]:
        return [*self._argv, "-f", "-c", str(self._cluster.conf)]

    def ready(self) -> bool:
        return self._cluster.ready(self.label)

    def stop(self, timeout: float = 0) -> int | None:
        # The data is in RAM and thrown away: there is nothing a clean stop would save.
        self.kill()
        return None


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class CephCluster(Started):
    """``rgw`` is the gateway's process: ``rgw.kill()`` and ``rgw.start()`` stage an outage."""

    def __init__(self, min_part_size: int = MIN_PART_SIZE) -> None:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "ceph"):
            if shutil.which(tool) is None:
                raise CephError(
                    f"{tool} is missing: apt-get install --no-install-recommends "
                    + " ".join(PACKAGES)
                )
        self.root = Path(tempfile.mkdtemp(prefix="regcache-ceph-"))
        self.conf = self.root / "ceph.conf"
        self.mon_port = port_outside_ephemeral_range()
        self.rgw_port = port_outside_ephemeral_range()
        self.min_part_size = min_part_size
        self.mon = CephDaemon(self, "mon", ["ceph-mon", "-i", "a"], self.mon_port)
        self.osd = CephDaemon(self, "osd", ["ceph-osd", "-i", "0"], self.mon_port)
        self.rgw = CephDaemon(self, "rgw", ["radosgw", "-n", "client.rgw"], self.rgw_port)
        self._buckets: set[str] = set()
        self.endpoint = S3Endpoint(f"http://127.0.0.1:{self.rgw_port}", ACCESS_KEY, SECRET_KEY)

    def start(self) -> None:
        try:
            self._start()
        except BaseException as error:
            logs = self.logs()
            self.close()
            raise CephError(f"the Ceph cluster did not start: {error}\n{logs}") from error

    def _start(self) -> None:
        fsid = str(uuid.uuid4())
        for sub in ("run", "log", "mon/a", "osd/0"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            CONF.format(
                fsid=fsid,
                root=self.root,
                mon_port=self.mon_port,
                rgw_port=self.rgw_port,
                min_part_size=self.min_part_size,
            )
        )
        monmap = self.root / "monmap"
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{self.mon_port}]", str(monmap))  # fmt: skip
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
        self.mon.start()
        osd_uuid = str(uuid.uuid4())
        self._run("ceph", "osd", "new", osd_uuid)
        self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self.osd.start()
        self.rgw.start()
        self._run("radosgw-admin", "user", "create", "--uid", "regcache",
                  "--display-name", "regcache", "--access-key", ACCESS_KEY,
                  "--secret-key", SECRET_KEY)  # fmt: skip

    def _run(self, *argv: str) -> str:
        done = subprocess.run(
            [*argv, "-c", str(self.conf)], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise CephError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def ready(self, label: str) -> bool:
        if label == "mon":
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.mon_port)) == 0
        if label == "osd":
            return '"num_up_osds":1' in self._run("ceph", "osd", "stat", "-f", "json")
        try:
            with urllib.request.urlopen(self.endpoint.url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any S3 answer, even a refusal, means the gateway is up
        except OSError:
            return False

    def create_bucket(self, name: str) -> None:
        """Blocking; a bucket that exists already is fine."""
        if name in self._buckets:
            return
        # Any: botocore builds its clients' methods and exceptions at run time.
        client: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint.url,
            region_name=self.endpoint.region,
            aws_access_key_id=self.endpoint.access_key,
            aws_secret_access_key=self.endpoint.secret_key,
        )
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        finally:
            client.close()
        self._buckets.add(name)

    def logs(self) -> str:
        """Every daemon's log, for a failure's report."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} (last 4000 characters)\n{text[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for daemon in (self.rgw, self.osd, self.mon):
            daemon.kill()
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    with CephCluster() as cluster:
        print(f"up in {time.monotonic() - started:.1f}s: {cluster.endpoint}")
        print(f"logs under {cluster.root}; Ctrl-C stops it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
