"""The measured scenarios, run against one peer at a time.

Only one peer is running while it is measured (the others are stopped), so an idle peer's
process takes nothing from the two cores; the upstream runs throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import skopeo
from tests.support.httpclient import http_request
from tests.support.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageInfo,
    build_image,
)

from . import loadgen
from .environment import load_average
from .peers import Peer, Regcache, Upstream
from .procfs import cpu_seconds, reset_peak, total_peak
from .profile import ProfileSummary, sampled

REPOSITORY = "bench/app"
TAG = "v1"
SEED = 20261127
MB = 1_000_000
# What containerd sends when it resolves a tag: every manifest and index type it can use.
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_BLOB_PATH = re.compile(r"/v2/.+/blobs/sha256:[0-9a-f]{64}")
_MANIFEST_PATH = re.compile(r"/v2/.+/manifests/(?P<ref>[^/]+)")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    quick: bool
    layer_sizes: tuple[int, ...]
    cold_clients: int = 16
    sequential_fetches: int = 10
    parallel_clients: int = 8
    parallel_fetches_each: int = 3
    head_connections: int = 32
    head_duration: float = 10.0
    head_warmup: float = 1.0

    @classmethod
    def full(cls) -> Settings:
        return cls(quick=False, layer_sizes=(1 * MB, 20 * MB, 200 * MB))

    @classmethod
    def short(cls) -> Settings:
        return cls(
            quick=True,
            layer_sizes=(1 * MB, 10 * MB, 50 * MB),
            sequential_fetches=4,
            parallel_fetches_each=1,
            head_duration=3.0,
            head_warmup=0.5,
        )


# -- the image --------------------------------------------------------------------------------


def prepare_image(layout_dir: Path, upstream: Upstream, settings: Settings) -> ImageInfo:
    """Seeded random layers (incompressible), pushed to the upstream under bench/app:v1."""
    image = build_image(layout_dir, TAG, seed=SEED, layer_sizes=settings.layer_sizes)
    skopeo.push(layout_dir, TAG, upstream.registry.ref(REPOSITORY, TAG), timeout=600)
    return image


def largest_blob(image: ImageInfo) -> tuple[str, int]:
    size, digest = max(zip(image.layer_sizes, image.layer_digests, strict=True))
    return digest, size


# -- what reached the upstream ----------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamRequests:
    """The upstream's access log between two marks."""

    blob_gets: dict[str, int]  # digest -> successful GETs (200 or 206)
    by_kind: dict[str, int]  # e.g. "GET blob": 4, "HEAD manifest by tag": 1, "GET /v2/": 2
    non_2xx: dict[str, int]  # "HEAD blob 404": 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def gets_per_blob(self, digests: Iterable[str]) -> float:
        wanted = list(digests)
        return sum(self.blob_gets.get(d, 0) for d in wanted) / len(wanted)


def upstream_requests(upstream: Upstream, since: int) -> UpstreamRequests:
    blob_gets: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    non_2xx: Counter[str] = Counter()
    for entry in upstream.registry.requests(since):
        kind = _kind(entry.path)
        by_kind[f"{entry.method} {kind}"] += 1
        if not 200 <= entry.status < 300:
            non_2xx[f"{entry.method} {kind} {entry.status}"] += 1
        if kind == "blob" and entry.method == "GET" and entry.status in (200, 206):
            blob_gets[entry.path.rsplit("/", 1)[1]] += 1
    return UpstreamRequests(dict(blob_gets), dict(by_kind), dict(non_2xx))


def _kind(path: str) -> str:
    if path in ("/v2/", "/v2"):
        return "/v2/"
    if _BLOB_PATH.fullmatch(path):
        return "blob"
    if m := _MANIFEST_PATH.fullmatch(path):
        return "manifest by digest" if m["ref"].startswith("sha256:") else "manifest by tag"
    return "other"


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdPull:
    clients: int
    wall_s: float
    blob_gets_per_blob: float
    upstream: UpstreamRequests
    peak_rss: int | None
    cpu_s: float | None  # the serving side's CPU time during the pull
    pulled_bytes: int


@dataclass(frozen=True)
class TagCheck:
    status: int
    digest: str | None


@dataclass
class PeerResult:
    peer: str
    description: str
    cold: dict[int, ColdPull] = field(default_factory=dict)
    warm_sequential: loadgen.FetchResult | None = None
    warm_parallel: loadgen.FetchResult | None = None
    warm_sequential_new: loadgen.FetchResult | None = None  # Connection: close on each fetch
    warm_parallel_new: loadgen.FetchResult | None = None
    cold_layer_s: float | None = None  # the largest layer alone, one client, cache empty
    cold_layer_cpu_s: float | None = None  # the serving side's CPU time for it
    warm_upstream: UpstreamRequests | None = None
    warm_peak_rss: int | None = None
    warm_cpu_s: float | None = None
    warm_cache_status: str | None = None
    tag_check: TagCheck | None = None
    tags: loadgen.HeadLoadResult | None = None
    tags_upstream: UpstreamRequests | None = None
    tags_cpu_s: float | None = None
    load_average: dict[str, list[float]] = field(default_factory=dict)
    memory_processes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the scenarios ----------------------------------------------------------------------------


async def run_peer(
    peer: Peer,
    upstream: Upstream,
    image: ImageInfo,
    settings: Settings,
    scratch: Path,
    log: Log,
    profile_dir: Path | None = None,
    profiles: list[ProfileSummary] | None = None,
) -> PeerResult:
    result = PeerResult(peer.name, peer.description)
    result.load_average["start"] = load_average()

    def profiled(phase: str) -> contextlib.AbstractAsyncContextManager[None]:
        if profile_dir is None or profiles is None or not isinstance(peer, Regcache):
            return contextlib.nullcontext()
        return sampled(peer.pid, profile_dir / f"{phase}.txt", profiles)

    peer.start_cold()
    digest, size = largest_blob(image)
    blob_url = f"{peer.url}/v2/{REPOSITORY}/blobs/{digest}"
    log(f"{peer.name}: cold fetch of the {size / MB:.0f} MB layer alone, 1 client")
    cpu_before = cpu_seconds(peer.cpu_pids())
    async with profiled("cold-layer"):
        layer = await loadgen.fetch_sequential(blob_url, 1, size)
    result.cold_layer_s = layer.transfers[0].seconds
    result.cold_layer_cpu_s = _spent(cpu_before, cpu_seconds(peer.cpu_pids()))
    for clients in (1, settings.cold_clients):
        peer.start_cold()
        log(f"{peer.name}: cold pull, {clients} client(s)")
        async with profiled(f"cold-{clients}"):
            cold = await cold_pull(peer, upstream, image, clients, scratch / "pulls")
        result.cold[clients] = cold
        log(
            f"{peer.name}: {clients} client(s) {cold.wall_s:.2f} s, "
            f"{cold.blob_gets_per_blob:.2f} upstream GETs per blob, "
            f"upstream saw {cold.upstream.by_kind}"
        )

    # The cold pulls above left every blob in the peer's cache.
    probe = http_request("HEAD", blob_url, timeout=30)
    result.warm_cache_status = probe.headers.get("X-Cache-Status")
    pids = peer.memory_pids()
    result.memory_processes = {str(pid): label for pid, label in pids.items()}
    if not reset_peak(pids):
        result.notes.append("could not reset VmHWM; warm peak RSS counts from the cold pull")
    mark = upstream.registry.mark()
    cpu_before = cpu_seconds(peer.cpu_pids())
    # Keep-alive first (the rows issue 3 judged), then a new connection per fetch (issue 13).
    for new in (False, True):
        how = "a new connection per fetch" if new else "keep-alive"
        log(f"{peer.name}: warm blob {size / MB:.0f} MB x {settings.sequential_fetches} "
            f"sequential, {how}")  # fmt: skip
        async with profiled("warm-sequential" + "-new" * new):
            sequential = await loadgen.fetch_sequential(
                blob_url, settings.sequential_fetches, size, new
            )
        log(
            f"{peer.name}: warm blob x {settings.parallel_clients} parallel clients "
            f"x {settings.parallel_fetches_each}, {how}"
        )
        async with profiled("warm-parallel" + "-new" * new):
            parallel = await loadgen.fetch_parallel(
                blob_url, settings.parallel_clients, settings.parallel_fetches_each, size, new
            )
        if new:
            result.warm_sequential_new, result.warm_parallel_new = sequential, parallel
        else:
            result.warm_sequential, result.warm_parallel = sequential, parallel
        log(
            f"{peer.name}: warm {sequential.mb_per_s:.0f} MB/s sequential, "
            f"{parallel.mb_per_s:.0f} MB/s parallel, {how}"
        )
    result.warm_peak_rss = total_peak(pids)
    result.warm_cpu_s = _spent(cpu_before, cpu_seconds(peer.cpu_pids()))
    result.warm_upstream = upstream_requests(upstream, mark)
    # For "direct" the upstream *is* the server being read.
    if result.warm_upstream.blob_gets and peer.name != "direct":
        result.notes.append(f"warm blob reads reached the upstream: {result.warm_upstream}")

    result.tag_check = check_tag(peer, image)
    log(
        f"{peer.name}: HEAD manifest by tag, {settings.head_connections} connections, "
        f"{settings.head_duration:g} s"
    )
    host, port = peer.host.rsplit(":", 1)
    mark = upstream.registry.mark()
    cpu_before = cpu_seconds(peer.cpu_pids())
    async with profiled("tag-head"):
        result.tags = await loadgen.head_load(
            host,
            int(port),
            f"/v2/{REPOSITORY}/manifests/{TAG}",
            {"Accept": MANIFEST_ACCEPT},
            connections=settings.head_connections,
            duration=settings.head_duration,
            warmup=settings.head_warmup,
        )
    result.tags_cpu_s = _spent(cpu_before, cpu_seconds(peer.cpu_pids()))
    result.tags_upstream = upstream_requests(upstream, mark)
    if result.tags.non_200:
        result.notes.append(f"tag HEADs answered non-200: {result.tags.statuses}")
    log(
        f"{peer.name}: {result.tags.rps:.0f} req/s, p50 {result.tags.p50_ms:.2f} ms, "
        f"p99 {result.tags.p99_ms:.2f} ms, {result.tags_upstream.total} upstream requests"
    )
    result.load_average["end"] = load_average()
    return result


async def cold_pull(
    peer: Peer, upstream: Upstream, image: ImageInfo, clients: int, out_root: Path
) -> ColdPull:
    """``clients`` concurrent ``skopeo copy docker://PEER/bench/app:v1 dir:OUT``."""
    _empty_dir(out_root)
    pids = peer.memory_pids()
    reset_peak(pids)
    mark = upstream.registry.mark()
    cpu_before = cpu_seconds(peer.cpu_pids())
    started = time.perf_counter()
    # A TaskGroup cancels the other pulls (and so kills their skopeo) when one fails.
    async with asyncio.timeout(900), asyncio.TaskGroup() as group:
        for i in range(clients):
            ref = peer.client_ref(i, REPOSITORY, TAG)
            group.create_task(skopeo.pull_async(ref, out_root / f"client{i}"))
    wall = time.perf_counter() - started
    cpu = _spent(cpu_before, cpu_seconds(peer.cpu_pids()))
    peak = total_peak(pids)
    pulled = _check_pulled(out_root, image, clients)
    shutil.rmtree(out_root, ignore_errors=True)
    await _upstream_quiet(upstream, mark)
    counted = upstream_requests(upstream, mark)
    return ColdPull(
        clients=clients,
        wall_s=wall,
        blob_gets_per_blob=counted.gets_per_blob(image.blob_digests),
        upstream=counted,
        peak_rss=peak,
        cpu_s=cpu,
        pulled_bytes=pulled,
    )


async def _upstream_quiet(upstream: Upstream, since: int) -> None:
    """Wait (up to 15 s) until the upstream has seen no new request for a second.

    Distribution's proxy mode fetches each blob a second time to store it, and that fetch
    can still be running when the client already has the blob; it belongs to this pull.
    """
    seen = len(upstream.registry.requests(since))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            while True:
                await asyncio.sleep(1.0)
                now = len(upstream.registry.requests(since))
                if now == seen:
                    return
                seen = now


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _empty_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _check_pulled(out_root: Path, image: ImageInfo, clients: int) -> int:
    """skopeo verified every digest; this checks each client really wrote every blob."""
    total = 0
    sizes = dict(zip(image.layer_digests, image.layer_sizes, strict=True))
    sizes[image.config_digest] = len(image.config)
    for i in range(clients):
        pulled = skopeo.PulledImage(out_root / f"client{i}")
        for digest, size in sizes.items():
            path = pulled.out_dir / digest.partition(":")[2]
            if not path.is_file() or path.stat().st_size != size:
                raise RuntimeError(f"client {i} did not pull {digest} ({size} bytes)")
            total += size
    return total


def check_tag(peer: Peer, image: ImageInfo) -> TagCheck:
    """One HEAD before the load: the tag must resolve, to the pushed manifest."""
    url = f"{peer.url}/v2/{REPOSITORY}/manifests/{TAG}"
    digest = expect_manifest("HEAD", url, image.manifest_digest, peer.name)
    return TagCheck(200, digest)


def expect_manifest(method: str, url: str, expected: str, who: str) -> str:
    """``method url`` must answer 200 with the ``expected`` manifest digest; that digest."""
    resp = http_request(method, url, {"Accept": MANIFEST_ACCEPT}, timeout=30)
    digest = resp.headers.get("Docker-Content-Digest")
    if resp.status != 200 or digest != expected:
        raise RuntimeError(
            f"{who}: {method} {url} answered {resp.status} with digest {digest}, "
            f"expected 200 with {expected}"
        )
    return expected
