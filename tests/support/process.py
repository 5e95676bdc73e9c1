"""A server the tests run as a subprocess on 127.0.0.1: logged to a file, restartable.

Restarts keep the port and append to the same log, so a test can stage an outage or a
crash and go on counting requests from marks it took before.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from .lifecycle import Started
from .ports import free_port


class ServerProcessError(RuntimeError):
    pass


class ServerProcess(Started):
    """Subclasses say how to run (``argv``, ``env``, ``cwd``) and when it is up (``ready``)."""

    label = "server"
    error_type: type[RuntimeError] = ServerProcessError

    def __init__(
        self,
        *,
        work_dir: Path | None,
        port: int | None,
        startup_timeout: float,
        log_name: str,
    ) -> None:
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix=f"regcache-{self.label}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.work_dir / log_name
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- what subclasses provide ---------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def cwd(self) -> Path | None:
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def before_start(self) -> None:
        """Called before every (re)start."""

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ref(self, repository: str, tag_or_digest: str) -> str:
        """``127.0.0.1:PORT/repo:tag`` or ``...@sha256:...``, as skopeo wants it."""
        sep = "@" if ":" in tag_or_digest else ":"
        return f"{self.host}/{repository}{sep}{tag_or_digest}"

    def start(self) -> None:
        if self.running:
            return
        self.before_start()
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.cwd(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._close_log()
                raise self.error_type(
                    f"{self.label} exited with {code} at startup:\n{self.log_text()}"
                )
            if self.ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise self.error_type(
                    f"{self.label} did not answer on {self.url} within "
                    f"{self.startup_timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL after ``timeout``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        self._close_log()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash or an abrupt outage, not a clean shutdown."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._close_log()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
