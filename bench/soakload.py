"""The soak's clients: pulls, tag HEADs, Range requests and clients that hang up mid-body, with
every byte received checked.

Full blobs are hashed against their digest, manifests against theirs, ranges and the prefixes
read before hanging up are compared with the registry's own files. What has once been served
completely counts as cached from then on: any 5xx for it afterwards is a failure of the goal
"no 5xx for cached content", whatever the upstream is doing at the time.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from tests.support.images import OCI_MANIFEST

from .soakimages import Blob, SoakImage

# Share of operations by kind; "cold" falls back to a warm pull when no new image has appeared.
OPERATIONS = {"cold": 0.15, "warm": 0.35, "head": 0.25, "range": 0.15, "abort": 0.10}
RANGE_MAX = 1_000_000
THINK_TIME = (0.05, 0.25)  # seconds between one client's operations
_CHUNK = 256 * 1024
_WRONG_KEPT = 20

_Check = Callable[[aiohttp.ClientResponse], Awaitable[None]]
OnQuiet = Callable[[str], Awaitable[None]]


@dataclass
class Tally:
    """What the clients saw. Keys of ``requests``: "<kind> <cached|cold>" -> outcome -> n."""

    requests: dict[str, Counter[str]] = field(default_factory=dict)
    pulls: Counter[str] = field(default_factory=Counter)  # "cold ok", "warm failed", ...
    wrong: list[str] = field(default_factory=list)
    wrong_count: int = 0
    cached_5xx: list[str] = field(default_factory=list)
    cached_5xx_count: int = 0
    bytes_checked: int = 0

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.requests.values())

    def record(self, kind: str, cached: bool, outcome: str, what: str) -> None:
        key = f"{kind} {'cached' if cached else 'cold'}"
        self.requests.setdefault(key, Counter())[outcome] += 1
        if outcome == "wrong":
            self.wrong_count += 1
            if len(self.wrong) < _WRONG_KEPT:
                self.wrong.append(f"{key}: {what}")
        if outcome == "5xx" and cached:
            self.cached_5xx_count += 1
            if len(self.cached_5xx) < _WRONG_KEPT:
                self.cached_5xx.append(f"{key}: {what}")

    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.requests.values():
            total.update(counts)
        return total


class _Wrong(Exception):
    """The body received differs from the content."""


class Load:
    def __init__(
        self,
        base_url: str,
        smalls: Sequence[SoakImage],
        larges: Sequence[SoakImage],
        *,
        duration: float,
        seed: int,
        quiet_settle: float,
    ) -> None:
        self.base_url = base_url
        self.duration = duration
        self.quiet_settle = quiet_settle
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.larges = list(larges)
        # The large images come early, so their cold pulls meet the load and the faults.
        self._cold = list(smalls)
        for i, image in enumerate(larges):
            self._cold.insert(min(len(self._cold), 2 + 5 * i), image)
        self._appeared_every = duration / max(1, len(self._cold))
        self._next_cold = 0
        self._retry: list[SoakImage] = []
        self.pulled: list[SoakImage] = []
        self._pulled_names: set[str] = set()
        self.cached: set[tuple[str, str]] = set()  # (repository, tag or digest)
        self.started = time.monotonic()
        self._paused = 0.0  # seconds of quiet, in which no image appears
        self.quiet = False

    async def run(self, workers: int, quiet_at: float, on_quiet: OnQuiet) -> None:
        """``workers`` clients for the duration, in two phases split at ``quiet_at`` seconds.
        After each, the clients' connections are closed and ``on_quiet`` runs once regcache
        has had ``quiet_settle`` seconds to drop its idle ones: the two points compare like for
        like, what regcache holds with nothing to do. The quiet time does not count as load."""
        self.started = time.monotonic()
        await self._phase(workers, self.started + quiet_at)
        await self._quiet(on_quiet, "quiet after minute 1")
        await self._phase(workers, time.monotonic() + self.duration - quiet_at)
        await self._quiet(on_quiet, "quiet at the end")

    async def _phase(self, workers: int, deadline: float) -> None:
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=10, sock_read=30)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False
        ) as session:
            await asyncio.gather(*(self._worker(session, deadline) for _ in range(workers)))

    async def _quiet(self, on_quiet: OnQuiet, label: str) -> None:
        paused = time.monotonic()
        self.quiet = True
        await asyncio.sleep(self.quiet_settle)
        await on_quiet(label)
        self.quiet = False
        self._paused += time.monotonic() - paused

    async def _worker(self, session: aiohttp.ClientSession, deadline: float) -> None:
        kinds, weights = zip(*OPERATIONS.items(), strict=True)
        while time.monotonic() < deadline:
            await self._operation(session, self.rng.choices(kinds, weights)[0])
            # The machine is shared: think time keeps the soak a soak, not a flood.
            await asyncio.sleep(self.rng.uniform(*THINK_TIME))

    async def _operation(self, session: aiohttp.ClientSession, kind: str) -> None:
        if kind == "cold" or not self.pulled:
            image = self._take_cold()
            if image is not None:
                await self._pull(session, image, "cold")
                return
            if not self.pulled:
                return
            kind = "warm"
        if kind == "warm":
            await self._pull(session, self._pick_warm(), "warm")
        elif kind == "head":
            await self._head(session, self.rng.choice(self.pulled))
        elif kind == "range":
            await self._range(session, self.rng.choice(self.larges))
        else:
            await self._abort(session, self.rng.choice(self.larges))

    def _take_cold(self) -> SoakImage | None:
        """An image whose cold pull failed, else the next image to appear, once its time has
        come (one per duration / images)."""
        if self._retry:
            return self._retry.pop(0)
        loaded = time.monotonic() - self.started - self._paused
        appeared = loaded / self._appeared_every + 1
        if self._next_cold >= min(appeared, len(self._cold)):
            return None
        image = self._cold[self._next_cold]
        self._next_cold += 1
        return image

    def _pick_warm(self) -> SoakImage:
        large = [i for i in self.larges if i.repository in self._pulled_names]
        if large and self.rng.random() < 0.1:
            return self.rng.choice(large)
        return self.rng.choice(self.pulled)

    # -- operations --------------------------------------------------------------------------

    async def _pull(self, session: aiohttp.ClientSession, image: SoakImage, how: str) -> None:
        ok = await self._manifest(session, image)
        for blob in image.blobs:
            ok = ok and await self._blob(session, image, blob)
        self.tally.pulls[f"{how} {'ok' if ok else 'failed'}"] += 1
        if how == "cold" and not ok:
            self._retry.append(image)  # as a client would, later
        if ok and image.repository not in self._pulled_names:
            self._pulled_names.add(image.repository)
            self.pulled.append(image)

    async def _manifest(self, session: aiohttp.ClientSession, image: SoakImage) -> bool:
        url = f"{self.base_url}/v2/{image.repository}/manifests/{image.tag}"

        async def check(resp: aiohttp.ClientResponse) -> None:
            body = await resp.read()
            if _digest(body) != image.manifest_digest or body != image.manifest:
                raise _Wrong(f"manifest of {len(body)} bytes, digest {_digest(body)}")
            self.tally.bytes_checked += len(body)

        key = (image.repository, image.tag)
        return await self._request(session, "manifest", "GET", url, {}, key, (200,), check)

    async def _blob(self, session: aiohttp.ClientSession, image: SoakImage, blob: Blob) -> bool:
        url = f"{self.base_url}/v2/{image.repository}/blobs/{blob.digest}"

        async def check(resp: aiohttp.ClientResponse) -> None:
            hasher = hashlib.sha256()
            size = 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
            got = "sha256:" + hasher.hexdigest()
            if got != blob.digest or size != blob.size:
                raise _Wrong(f"{blob.digest}: {size} bytes, digest {got}")
            self.tally.bytes_checked += size

        key = (image.repository, blob.digest)
        return await self._request(session, "blob", "GET", url, {}, key, (200,), check)

    async def _head(self, session: aiohttp.ClientSession, image: SoakImage) -> None:
        url = f"{self.base_url}/v2/{image.repository}/manifests/{image.tag}"

        async def check(resp: aiohttp.ClientResponse) -> None:
            digest = resp.headers.get("Docker-Content-Digest")
            if digest != image.manifest_digest:
                raise _Wrong(f"HEAD {image.repository}:{image.tag} said {digest}")

        key = (image.repository, image.tag)
        await self._request(session, "head", "HEAD", url, {}, key, (200,), check)

    async def _range(self, session: aiohttp.ClientSession, image: SoakImage) -> None:
        blob = image.blobs[-1]
        start = self.rng.randrange(blob.size)
        end = min(blob.size, start + self.rng.randint(1, RANGE_MAX)) - 1
        url = f"{self.base_url}/v2/{image.repository}/blobs/{blob.digest}"

        async def check(resp: aiohttp.ClientResponse) -> None:
            body = await resp.read()
            if resp.status == 200:
                # A server may ignore Range; then the whole blob must be right.
                first, expected = 0, blob.size
            else:
                first, expected = start, end - start + 1
            if len(body) != expected or body != _read(blob, first, len(body)):
                raise _Wrong(f"{blob.digest} bytes {start}-{end}: {len(body)} bytes differ")
            self.tally.bytes_checked += len(body)

        headers = {"Range": f"bytes={start}-{end}"}
        key = (image.repository, blob.digest)
        await self._request(session, "range", "GET", url, headers, key, (200, 206), check)

    async def _abort(self, session: aiohttp.ClientSession, image: SoakImage) -> None:
        """Read part of a large blob, check it, and hang up."""
        blob = image.blobs[-1]
        want = self.rng.randrange(1, blob.size // 2)
        url = f"{self.base_url}/v2/{image.repository}/blobs/{blob.digest}"

        async def check(resp: aiohttp.ClientResponse) -> None:
            got = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                got += chunk
                if len(got) >= want:
                    break
            if bytes(got) != _read(blob, 0, len(got)):
                raise _Wrong(f"{blob.digest}: the first {len(got)} bytes differ")
            self.tally.bytes_checked += len(got)
            resp.close()  # the connection goes, as a client killed mid-pull

        key = (image.repository, blob.digest)
        await self._request(session, "abort", "GET", url, {}, key, (200,), check, done="aborted")

    async def _request(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        method: str,
        url: str,
        headers: dict[str, str],
        key: tuple[str, str],
        statuses: tuple[int, ...],
        check: _Check,
        done: str = "ok",
    ) -> bool:
        cached = key in self.cached
        headers = {"Accept": OCI_MANIFEST, **headers} if "/manifests/" in url else headers
        what = f"{method} {url.removeprefix(self.base_url)}"
        outcome = "ok"
        try:
            async with session.request(method, url, headers=headers) as resp:
                what += f" -> {resp.status}"
                if resp.status >= 500:
                    outcome = "5xx"
                elif resp.status not in statuses:
                    outcome = f"status {resp.status}"
                else:
                    await check(resp)
                    outcome = done
        except _Wrong as exc:
            outcome, what = "wrong", f"{what}: {exc}"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientPayloadError:
            outcome = "truncated"
        except (aiohttp.ClientError, ConnectionError):
            outcome = "connection error"
        self.tally.record(kind, cached, outcome, what)
        if outcome == "ok" and kind in ("manifest", "blob"):
            self.cached.add(key)
        return outcome == "ok"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read(blob: Blob, offset: int, size: int) -> bytes:
    with blob.path.open("rb") as f:
        f.seek(offset)
        return f.read(size)
