"""The scale benchmark's pull client: raw HTTP/1.1 on asyncio streams, keep-alive, uvloop.

An aiohttp client would spend more CPU per request than the servers it measures, and all of
them share two cores. So each of a few client processes (spawned, each with its own event
loop) runs ``concurrency`` workers, each worker one keep-alive connection pulling images in
turn: manifest by tag (with the Accept headers containerd sends), then config and layer, every
body checked against its digest. Blob redirects (307 from Distribution) are followed on a
connection to the redirect's host, kept for the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any
from urllib.parse import urlsplit

from .scenarios import MANIFEST_ACCEPT
from .synthetic import describe

_TIMEOUT = 60.0


class PullError(RuntimeError):
    pass


@dataclass(frozen=True)
class PullResult:
    """What all client processes did, over the wall time from the first start to the last end."""

    images: int  # images pulled, or tag HEADs counted
    requests: int  # every request, redirects and HEAD warm-up included
    wall_s: float
    statuses: dict[int, int] = field(default_factory=dict)
    redirects: int = 0
    client_cpu_s: float = 0.0  # the client processes' own: a load generator must stay cheap

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, headers: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on the kept connection; a connection the server closed is reopened once."""
        for attempt in (0, 1):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"User-Agent: regcache-bench\r\n{headers}\r\n".encode()
            )
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            status, fields = _parse_head(head)
            body = b"" if method == "HEAD" else await _read_body(reader, fields)
            if fields.get("connection", "").lower() == "close":
                self.close()
            return status, fields, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(lines[0][9:12]), fields


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    if "content-length" in fields:
        return await reader.readexactly(int(fields["content-length"]))
    if fields.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are sent to us; the last CRLF
        return b"".join(parts)
    return await reader.read()


class _Worker:
    def __init__(self, host: str, port: int, tally: dict[str, Any]) -> None:
        self.home = _Connection(host, port)
        self.others: dict[tuple[str, int], _Connection] = {}
        self.tally = tally

    async def get(self, method: str, path: str, headers: str = "") -> tuple[dict[str, str], bytes]:
        conn = self.home
        for _ in range(5):
            status, fields, body = await conn.request(method, path, headers)
            self.tally["requests"] += 1
            statuses = self.tally["statuses"]
            statuses[status] = statuses.get(status, 0) + 1
            if status in (301, 302, 303, 307, 308):
                self.tally["redirects"] += 1
                target = urlsplit(fields["location"])
                if target.hostname:
                    key = (target.hostname, target.port or 80)
                    conn = self.others.get(key) or self.others.setdefault(key, _Connection(*key))
                path = target.path + (f"?{target.query}" if target.query else "")
                headers = ""  # a presigned URL wants nothing of the original request
                continue
            if status != 200:
                raise PullError(f"{method} {path} answered {status}: {body[:200]!r}")
            return fields, body
        raise PullError(f"{method} {path}: too many redirects")

    async def pull(self, index: int) -> None:
        image = describe(index)
        base = f"/v2/{image.repository}"
        _, manifest = await self.get(
            "GET", f"{base}/manifests/{image.tag}", f"Accept: {MANIFEST_ACCEPT}\r\n"
        )
        _check(manifest, image.manifest_digest, f"{base}:{image.tag}")
        parsed = json.loads(manifest)
        digests = [parsed["config"]["digest"], *(layer["digest"] for layer in parsed["layers"])]
        if digests != [image.config_digest, image.layer_digest]:
            raise PullError(f"{base}:{image.tag}: manifest names {digests}")
        for digest in digests:
            _, blob = await self.get("GET", f"{base}/blobs/{digest}")
            _check(blob, digest, f"{base}/blobs/{digest}")

    async def head(self, index: int) -> None:
        image = describe(index)
        path = f"/v2/{image.repository}/manifests/{image.tag}"
        fields, _ = await self.get("HEAD", path, f"Accept: {MANIFEST_ACCEPT}\r\n")
        if fields.get("docker-content-digest") != image.manifest_digest:
            raise PullError(f"HEAD {path}: digest {fields.get('docker-content-digest')}")

    def close(self) -> None:
        for conn in (self.home, *self.others.values()):
            conn.close()


def _check(body: bytes, digest: str, what: str) -> None:
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise PullError(f"{what}: {len(body)} bytes that are not {digest}")


async def _run_part(job: dict[str, Any]) -> dict[str, Any]:
    tally: dict[str, Any] = {"requests": 0, "statuses": {}, "redirects": 0, "images": 0}
    indices: Sequence[int] = range(job["first"], job["count"], job["stride"])
    queue = iter(indices)
    deadline = job.get("deadline")
    rng = random.Random(job["first"])

    async def work() -> None:
        worker = _Worker(job["host"], job["port"], tally)
        try:
            if deadline is None:
                for index in queue:
                    await worker.pull(index)
                    tally["images"] += 1
            else:
                while (sent := time.monotonic()) < deadline:
                    await worker.head(rng.randrange(job["count"]))
                    # The first seconds, while the other processes start, are a warm-up.
                    if sent >= job["measure_from"]:
                        tally["images"] += 1
        finally:
            worker.close()

    started, cpu = time.monotonic(), time.process_time()
    async with asyncio.timeout(job["timeout"]):
        await asyncio.gather(*(work() for _ in range(job["concurrency"])))
    ended = time.monotonic()
    return tally | {"started": started, "ended": ended, "cpu_s": time.process_time() - cpu}


def run_part(job: dict[str, Any]) -> dict[str, Any]:
    """One client process's share: every ``stride``-th image from ``first``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run_part(job))
    return uvloop.run(_run_part(job))


async def run(
    host: str,
    port: int,
    count: int,
    *,
    concurrency: int = 64,
    processes: int = 2,
    head_seconds: float | None = None,
) -> PullResult:
    """Pull images 0..count-1 once each, or with ``head_seconds`` send tag HEADs at random over
    them for that long; ``concurrency`` connections spread over ``processes`` processes."""
    # The processes start in a fraction of a second; the HEAD deadline is after all have.
    deadline = None if head_seconds is None else time.monotonic() + 2.0 + head_seconds
    jobs = [
        {
            "host": host,
            "port": port,
            "count": count,
            "first": i,
            "stride": processes,
            "concurrency": concurrency // processes + (i < concurrency % processes),
            "deadline": deadline,
            "measure_from": None if deadline is None else deadline - (head_seconds or 0.0),
            # A stuck server fails the run, not hangs it; 10 images/s is slower than any peer.
            "timeout": 600.0 + (count / 10 if head_seconds is None else head_seconds),
        }
        for i in range(processes)
    ]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, run_part, j) for j in jobs))
    statuses: dict[int, int] = {}
    for part in parts:
        for status, n in part["statuses"].items():
            statuses[int(status)] = statuses.get(int(status), 0) + n
    if head_seconds is not None:
        wall = head_seconds
    else:
        # CLOCK_MONOTONIC is one clock for every process of the machine.
        wall = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    return PullResult(
        images=sum(p["images"] for p in parts),
        requests=sum(p["requests"] for p in parts),
        wall_s=wall,
        statuses=statuses,
        redirects=sum(p["redirects"] for p in parts),
        client_cpu_s=sum(p["cpu_s"] for p in parts),
    )
