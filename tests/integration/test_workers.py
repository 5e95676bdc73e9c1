"""``regcache serve --workers 3``: three processes on one port and one cache directory behave
as one server: one upstream GET per blob however many clients land on whichever worker, a
download that goes on when its owning worker is SIGKILLed (and the worker is started again),
metrics that add up across workers, and signals that reach every worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cache.lockfiles import LOCK_FILE, lock_offset
from proxy.oci.digest import Digest
from tests.integration.conftest import MIB, FleetUpstream
from tests.support.fleetclients import BlobReader
from tests.support.ports import free_port
from tests.support.regcache import REPO_ROOT, RegcacheProcess, upstream_entry
from tests.support.throttle import ThrottledUpstream
from tests.support.waiting import wait_until

BIG = "fleet/big:1"
WORKERS = 3
CLIENTS = 16
WORKER_HEADER = "X-Regcache-Worker"


@pytest.fixture
def server(throttled: ThrottledUpstream, tmp_path: Path) -> Iterator[RegcacheProcess]:
    config = {
        "workers": WORKERS,
        "upstreams": [upstream_entry("docker.io", throttled.url, tag_ttl=3600)],
    }
    process = RegcacheProcess(config, work_dir=tmp_path / "server")
    process.start()
    yield process
    process.stop()


def blob_gets(upstream: FleetUpstream, digest: str, since: int, status: int | None = None) -> int:
    return upstream.registry.count(
        "GET", rf"/v2/.+/blobs/{re.escape(digest)}", since, status=status
    )


def workers_of(server: RegcacheProcess) -> list[int]:
    supervisor = server.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text()
    return [int(pid) for pid in children.split()]


def lock_holder(server: RegcacheProcess, digest: str) -> int | None:
    """The worker holding the digest's lock (a lock of an open file description, which
    /proc/locks lists without a pid: each worker's fdinfo names the locks of its opens)."""
    lock = server.cache_dir / LOCK_FILE
    if not lock.exists():
        return None
    inode, offset = lock.stat().st_ino, lock_offset(Digest.parse(digest))
    for pid in workers_of(server):
        try:
            infos = list(Path(f"/proc/{pid}/fdinfo").iterdir())
        except FileNotFoundError:
            continue
        for info in infos:
            try:
                text = info.read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for line in text.splitlines():
                fields = line.split()
                # lock:  1: OFDLCK ADVISORY WRITE -1 <dev>:<inode> <start> <end>
                ofd = len(fields) > 7 and fields[0] == "lock:" and fields[2] == "OFDLCK"
                if ofd and fields[6].endswith(f":{inode}") and fields[7] == str(offset):
                    return pid
    return None


def fetch_all(server: RegcacheProcess, digest: str, count: int) -> list[BlobReader]:
    """``count`` GETs of the blob, each on a connection of its own, started."""
    fetches = [BlobReader(server, "fleet/big", digest) for _ in range(count)]
    for fetch in fetches:
        fetch.start()
    return fetches


def test_sixteen_clients_on_three_workers_fetch_a_blob_once(
    fleet_upstream: FleetUpstream, throttled: ThrottledUpstream, server: RegcacheProcess
) -> None:
    image = fleet_upstream.images[BIG]
    size, digest = max(zip(image.layer_sizes, image.layer_digests, strict=True))
    throttled.rate = 16 * MIB  # every client asks while the layer is on its way
    mark = fleet_upstream.registry.mark()

    fetches = fetch_all(server, digest, CLIENTS)
    for fetch in fetches:
        fetch.join(120)

    assert [(f.error, f.status, f.received, f.digest) for f in fetches] == [
        (None, 200, size, digest)
    ] * CLIENTS
    assert blob_gets(fleet_upstream, digest, mark) == 1
    answered_by = {fetch.headers.get(WORKER_HEADER) for fetch in fetches}
    assert len(answered_by) > 1, "the kernel spreads the connections over the workers"
    # One scrape, whichever worker answers it, counts every worker's requests.
    assert server.metric("regcache_cache_requests_total", kind="blob") == CLIENTS
    assert server.metric("regcache_upstream_bytes_total") == size
    assert server.metric("regcache_inflight_downloads") == 0
    status = server.get("/status.json").json()
    assert (status["workers"], status["requests"]["miss"] + status["requests"]["hit"]) == (
        WORKERS,
        CLIENTS,
    )


def test_a_worker_killed_mid_blob_is_replaced_and_its_download_taken_over(
    fleet_upstream: FleetUpstream, throttled: ThrottledUpstream, server: RegcacheProcess
) -> None:
    image = fleet_upstream.images[BIG]
    size, digest = max(zip(image.layer_sizes, image.layer_digests, strict=True))
    throttled.rate = size / 8  # about 8 s for the whole blob: the kill lands mid-blob
    mark = fleet_upstream.registry.mark()
    before = workers_of(server)
    fetches = fetch_all(server, digest, CLIENTS)
    wait_until(lambda: lock_holder(server, digest) is not None, "an owner")
    owner = lock_holder(server, digest)
    assert owner in before
    wait_until(lambda: sum(f.received > MIB for f in fetches) > CLIENTS // 2, "bytes flowing")
    assert not any(send.finished for send in throttled.blob_sends(digest)), "not mid-blob"

    killed_at = time.monotonic()
    os.kill(owner, signal.SIGKILL)
    for fetch in fetches:
        fetch.join(120)

    others = [f for f in fetches if f.error is None and f.status == 200 and f.digest == digest]
    # The owner's own clients lose their connections; every other client gets the blob.
    assert len(others) >= CLIENTS // 2
    assert all(f.received < size for f in fetches if f not in others)
    assert blob_gets(fleet_upstream, digest, mark, status=200) == 1
    assert blob_gets(fleet_upstream, digest, mark, status=206) <= 1
    assert blob_gets(fleet_upstream, digest, mark) <= 2
    wait_until(lambda: len(workers_of(server)) == WORKERS, "the supervisor to start a worker")
    assert owner not in workers_of(server)
    assert server.metric("regcache_lease_takeovers_total") == 1
    resumed = [s.first_byte for s in throttled.blob_sends(digest) if s.started > killed_at]
    flowing = min(filter(None, resumed)) - killed_at
    ranges = [send.range for send in throttled.blob_sends(digest)]
    print(f"takeover: SIGKILL -> upstream bytes again {flowing:.2f} s; blob GETs {ranges}")
    again = fetch_all(server, digest, 3)
    for fetch in again:
        fetch.join(60)
    assert {(f.status, f.digest) for f in again} == {(200, digest)}
    assert blob_gets(fleet_upstream, digest, mark) <= 2


def test_signals_reach_every_worker_and_sigterm_stops_them_all(
    server: RegcacheProcess,
) -> None:
    workers = workers_of(server)
    assert len(workers) == WORKERS
    # The supervisor's directory of the workers' metrics, whose files they map.
    maps = Path(f"/proc/{workers[0]}/maps").read_text()
    metrics_dir = Path(re.findall(r"(/\S+/\.metrics/\d+-[^/\s]+)/", maps)[0])
    assert server.pid is not None
    os.kill(server.pid, signal.SIGHUP)
    wait_until(
        lambda: server.log_text().count("SIGHUP: reloading") == WORKERS + 1,
        "every worker to reload",
    )
    assert all(f"[worker {index}]: SIGHUP" in server.log_text() for index in range(WORKERS))

    assert server.stop(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not metrics_dir.exists()


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``regcache serve --workers 2`` run to its end, with its exit status and log."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "proxy", "serve", "--workers", "2", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_a_port_in_use_is_an_error_not_a_shared_group(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, "--listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path))
    assert done.returncode == 1
    assert "cannot listen on" in done.stderr


def test_workers_that_cannot_start_stop_the_supervisor(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    listen = f"127.0.0.1:{free_port()}"
    done = serve(tmp_path, "--listen", listen, "--cache-dir", str(not_a_dir))
    assert done.returncode == 1
    assert "keeps dying at start" in done.stderr
