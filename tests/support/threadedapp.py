"""An aiohttp application served on 127.0.0.1 from a background thread.

Tests drive the proxy as a subprocess with blocking calls (skopeo, urllib), so servers
the tests own run on a loop of their own instead of the test's.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from .lifecycle import Started
from .ports import free_port


class ThreadedApp(Started):
    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # handed to start() below
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"app-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors or not started.is_set():
            self._thread.join(1)
            self._thread = None
            raise RuntimeError(f"test server failed to start on {self.url}") from (
                errors[0] if errors else None
            )

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def close(self) -> None:
        self.stop()
