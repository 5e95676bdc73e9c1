"""``regcache serve --workers N``: N processes serving one port, one cache between them.

The supervisor (the process ``serve`` started as) opens the N listening sockets, each with
``SO_REUSEPORT`` and the configured backlog, so that the kernel spreads connections over
them; each worker it forks serves its own. Holding the sockets in the supervisor keeps a
dead worker's queue of connections waiting for its replacement rather than reset, and makes
a port already in use an error at start, not a worker that fails forever.

The supervisor forwards SIGTERM and SIGINT (a graceful drain) and SIGHUP (reload) to the
workers, starts a worker again when one dies, and exits once they are all gone after a
stop. It runs no event loop and starts no thread, so forking it is safe at any time.
Workers share the cache directory: its temporary files are cleared here, once, and single
flight holds across them through lock files (proxy.cache.localdownloads).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from proxy.config import Config
from proxy.logs import mark_worker
from proxy.metrics import forget_process, share_between_processes
from proxy.store.spool import clear_directory

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
# The ones that ask something of the supervisor (SIGCHLD only wakes it to reap).
_ASKED = frozenset(SIGNALS) - {signal.SIGCHLD}
# A worker that dies is started again after this, so that one failing at once does not spin.
RESTART_DELAY = 0.5
# Exit status of a worker whose configuration broke (a TLS file gone): restarting won't help.
CONFIG_ERROR = 2
# A worker that dies this soon after its start this many times in a row cannot start (an
# unwritable cache directory, say): the supervisor gives up rather than spin.
EARLY_DEATH = 5.0
EARLY_DEATHS = 3
_PR_SET_PDEATHSIG = 1


def worker_count(config: Config, cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """``workers``, or one per CPU this process may run on: the CPUs it may be scheduled on,
    and fewer under a cgroup's CPU quota (a container's CPU limit). A replica of a fleet is one
    process unless told: its peers follow its downloads at its one address, where another
    worker than the owner would not have them (README, Operations)."""
    if config.workers:
        return config.workers
    if config.index_backend == "redis":
        return 1
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def raise_open_files_limit() -> None:
    """The soft limit of open files up to the hard one: an idle keep-alive connection costs
    a descriptor, and 10,000 of them are more than the usual soft 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open files limit raised from %d to %d", soft, hard)


def listening_socket(host: str, port: int, backlog: int, shared: bool = True) -> socket.socket:
    """A socket bound and listening; ``shared``: with SO_REUSEPORT, one of a group."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def open_sockets(config: Config, count: int) -> list[socket.socket]:
    """The workers' sockets. The port is bound alone first: a port something listens on
    already fails here, rather than joining another server's SO_REUSEPORT group and sharing
    its connections."""
    host, port, backlog = config.listen_host, config.listen_port, config.listen_backlog
    listening_socket(host, port, 1, shared=False).close()
    return [listening_socket(host, port, backlog) for _ in range(count)]


class Supervisor:
    def __init__(self, config: Config, count: int) -> None:
        self._config = config
        self._count = count
        self._sockets: list[socket.socket] = []
        self._pids: dict[int, int] = {}  # pid -> worker index
        self._started: dict[int, float] = {}  # worker index -> when it was last started
        self._early: dict[int, int] = {}  # worker index -> early deaths in a row
        self._stopping = False
        self._status = 0

    def run(self) -> int:
        """Serve until stopped; the exit status."""
        tmp = self._config.cache_dir / "tmp"
        if tmp.is_dir():
            clear_directory(tmp)  # before any worker writes there
        metrics_dir = _metrics_dir(self._config.cache_dir)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            share_between_processes(metrics_dir)
            try:
                self._sockets = open_sockets(self._config, self._count)
            except OSError as exc:
                log.error("cannot listen on %s: %s", self._config.listen, exc)
                return 1
            port = self._sockets[0].getsockname()[1]
            log.info("%d workers on %s:%d", self._count, self._config.listen_host, port)
            for index in range(self._count):
                self._start(index, old_mask)
            self._supervise(old_mask)
        finally:
            for pid in list(self._pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for sock in self._sockets:
                sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return self._status

    def _supervise(self, old_mask: set[int | signal.Signals]) -> None:
        restarts: list[tuple[float, int]] = []
        while self._pids or restarts:
            wake = min((at for at, _ in restarts), default=time.monotonic() + 1.0)
            timeout = max(0.0, wake - time.monotonic())
            info = signal.sigtimedwait(SIGNALS, timeout)
            # Only the signals waited for: a debugger attached with ptrace (py-spy) has made
            # the wait return a number that is none of them, which must not stop the workers.
            if info is not None and info.si_signo in _ASKED:
                self._signalled(signal.Signals(info.si_signo))
            for index in self._reap():
                if not self._stopping:
                    restarts.append((time.monotonic() + RESTART_DELAY, index))
            due = [entry for entry in restarts if entry[0] <= time.monotonic()]
            for entry in due:
                restarts.remove(entry)
                if not self._stopping:
                    self._start(entry[1], old_mask)
            if self._stopping:
                restarts.clear()

    def _signalled(self, signo: signal.Signals) -> None:
        if signo == signal.SIGHUP:
            log.info("SIGHUP: reloading in %d workers", len(self._pids))
            self._send(signal.SIGHUP)
        elif self._stopping:
            log.warning("%s again: stopping the workers at once", signo.name)
            self._send(signal.SIGKILL)
        else:
            log.info("%s: stopping %d workers", signo.name, len(self._pids))
            self._stopping = True
            # SIGTERM whichever it was: the workers drain on it as on SIGINT, and a terminal's
            # Ctrl-C reaches only the supervisor (the workers are in a group of their own).
            self._send(signal.SIGTERM)

    def _send(self, signo: signal.Signals) -> None:
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signo)

    def _reap(self) -> list[int]:
        """The indexes of the workers that ended."""
        ended = []
        while self._pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            index = self._pids.pop(pid, None)
            if index is None:
                continue
            forget_process(pid)
            code = os.waitstatus_to_exitcode(status)
            if code == CONFIG_ERROR and not self._stopping:
                self._give_up(CONFIG_ERROR, f"worker {index}'s configuration is broken")
            elif not self._stopping and self._failing(index):
                self._give_up(1, f"worker {index} keeps dying at start ({code})")
            elif not self._stopping:
                log.error("worker %d (pid %d) ended (%d); starting it again", index, pid, code)
            ended.append(index)
        return ended

    def _give_up(self, status: int, reason: str) -> None:
        log.error("%s; stopping", reason)
        self._status = status
        self._stopping = True
        self._send(signal.SIGTERM)

    def _failing(self, index: int) -> bool:
        early = time.monotonic() - self._started[index] < EARLY_DEATH
        self._early[index] = self._early.get(index, 0) + 1 if early else 0
        return self._early[index] >= EARLY_DEATHS

    def _start(self, index: int, old_mask: set[int | signal.Signals]) -> None:
        self._started[index] = time.monotonic()
        supervisor = os.getpid()
        # The server's modules were imported before the fork, so that the workers share
        # their pages rather than each importing its own copy; a worker's garbage collector
        # would write to the header of every object it inherited, copying those pages one by
        # one. Frozen objects are never collected, so their pages stay shared.
        gc.freeze()
        pid = os.fork()
        if pid:
            self._pids[pid] = index
            return
        status = 1
        try:
            status = self._work(index, supervisor, old_mask)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(status)

    def _work(self, index: int, supervisor: int, old_mask: set[int | signal.Signals]) -> int:
        os.setpgid(0, 0)
        # A supervisor killed outright takes its workers with it.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:
            return 0  # it died before the line above
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        mark_worker(index)
        mine = self._sockets[index]
        for sock in self._sockets:
            if sock is not mine:
                sock.close()
        from proxy.config import ConfigError
        from proxy.server.app import run_server

        try:
            run_server(self._config, sock=mine, worker=index)
        except ConfigError as exc:
            print(f"regcache: {exc}", file=sys.stderr)
            return CONFIG_ERROR
        return 0


def _metrics_dir(cache_dir: Path) -> Path:
    """A directory of this supervisor's own for the workers' metric files, in the cache
    directory: the root filesystem may be read-only with no /tmp (the image's own test). A
    supervisor killed outright leaves its directory; the next one removes it."""
    parent = cache_dir / ".metrics"
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        # An unusable cache directory is the workers' to report, as they open the cache.
        return Path(tempfile.mkdtemp(prefix="regcache-metrics-"))
    for old in parent.iterdir():
        pid = old.name.partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))
