"""regcache's own application in the test's event loop, driven through its HTTP API.

Built with ``proxy.server.app.build_app`` from a ``Config`` and served with aiohttp's runner and
the access logger, as ``run_server`` serves it, so a test exercises what production serves
minus the process around it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.config import Config, UpstreamConfig
from proxy.server.accesslog import ACCESS_LOGGER, AccessLogger
from proxy.server.app import build_app
from proxy.server.tls import listening_context

from .regcache import parse_metrics, sum_samples

_UPSTREAM_FIELDS = frozenset(f.name for f in fields(UpstreamConfig))
# Short enough that a silent upstream fails a test in seconds, long enough for a loaded CI.
UPSTREAM_DEFAULTS: dict[str, Any] = {"tag_ttl": 60.0, "connect_timeout": 2.0, "read_timeout": 2.0}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        code: str = self.json()["errors"][0]["code"]
        return code


def make_config(cache_dir: Path, upstream_url: str, **settings: Any) -> Config:
    """A config with one upstream, ``docker.io``, at ``upstream_url``.

    ``settings`` are ``Config`` fields and ``UpstreamConfig`` fields (no name is both), so
    ``make_config(..., tag_ttl=0, offline=True)`` reads as the YAML would.
    """
    upstream = {**UPSTREAM_DEFAULTS, "name": "docker.io", "url": upstream_url}
    upstream.update({k: v for k, v in settings.items() if k in _UPSTREAM_FIELDS})
    top = {k: v for k, v in settings.items() if k not in _UPSTREAM_FIELDS}
    top.setdefault("upstreams", (UpstreamConfig(**upstream),))
    top.setdefault("default_upstream", top["upstreams"][0].name)
    return Config(cache_dir=cache_dir, **top)


class InProcessRegcache:
    """``client_ssl`` is what the test's client trusts when the config has ``tls:`` files;
    ``port``: where to listen, known before the start (a replica's advertise_url); any free
    one by default."""

    def __init__(
        self, config: Config, client_ssl: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self.config = config
        self.client_ssl = client_ssl
        self.port = port
        self.app: web.Application | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        """A session whose relative URLs (``client.get("/v2/...")``) go to this regcache."""
        assert self._session is not None, "not started"
        return self._session

    async def start(self) -> None:
        # As run_server serves it, but with a shorter wait for responses still under way.
        app = build_app(self.config)
        server_ssl = listening_context(app, self.config)
        runner = web.AppRunner(
            app,
            access_log_class=AccessLogger,
            access_log=ACCESS_LOGGER,
            shutdown_timeout=2.0,
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=server_ssl).start()
        self._runner = runner
        self.app = app
        scheme = "http" if server_ssl is None else "https"
        self.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
        connector = aiohttp.TCPConnector(ssl=self.client_ssl or True)
        self._session = aiohttp.ClientSession(
            base_url=self.url, auto_decompress=False, connector=connector
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self, **changes: Any) -> None:
        """Stop, and start again on the same cache with these ``Config`` fields changed."""
        await self.stop()
        self.config = replace(self.config, **changes)
        await self.start()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        async with self.client.request(method, path, headers=headers, data=data) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return await self.request("GET", path, headers)

    async def head(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return await self.request("HEAD", path, headers)

    def files(self, area: str) -> list[Path]:
        """Files under ``<cache_dir>/<area>``: ``blobs`` (verified) or ``tmp`` (being written)."""
        return [path for path in (self.config.cache_dir / area).rglob("*") if path.is_file()]

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the /metrics samples called ``name`` (``_total`` optional) with ``labels``."""
        answer = await self.get("/metrics")
        assert answer.status == 200, answer
        return sum_samples(parse_metrics(answer.body.decode()), name, labels)

    async def settled(self, name: str, value: float, **labels: str) -> None:
        """Wait (5 s at most) until a metric reads ``value``: for work that goes on after a
        response was sent, such as a download finishing or eviction."""
        for _ in range(250):
            if (seen := await self.metric(name, **labels)) == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{name}{labels} stayed at {seen}, not {value}")
