"""Memory and start-up of a server over a large cache: ``python -m bench.cachefill N``.

Fills a cache directory with N small images (manifest + config + one layer, each in its own
repository and tag) by writing the stores, the index and the eviction order directly,
in-process, the way the server would have left them; then starts ``python -m proxy serve
--offline`` on it and reports the time to the first ``/v2/`` answer and to the first cache
hit, and the resident memory after start and after every image was pulled once (manifest by
tag, then its blobs): RSS summed over the supervisor and its workers, which counts the pages
they share since the fork in each, and PSS, which counts them once (bench/procfs.py), with
each process's own.

With ``--bounded`` the cache has a ``max_size`` (far above what it holds), which is what
turns eviction, and its bookkeeping, on. ``--tracemalloc`` starts the server under
tracemalloc and prints the allocation sites that grew most while serving. ``--code`` runs
another version's server (a ``git archive`` of it) on the same directory, for before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import yaml

from bench.procfs import cpu_seconds, process_tree, pss, rss, status_bytes
from proxy.model import Kind, RepoRef, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.store.diskindex import DiskIndex
from proxy.store.diskorder import DiskOrder
from proxy.store.redisorder import Key

UPSTREAM = "up"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
BATCH = 2_000
# Run as the server's ``python -c``: the proxy's own entry point, with a SIGUSR1 that writes
# the allocation sites that grew since the first SIGUSR1 (taken after start).
_TRACED = """
import os, runpy, signal, sys, tracemalloc
tracemalloc.start(1)
first, path = [], sys.argv[1]
def dump(*_):
    snap = tracemalloc.take_snapshot()
    if not first:
        first.append(snap)
        return
    with open(path + ".part", "w") as out:
        for stat in snap.compare_to(first[0], "lineno")[:30]:
            out.write(f"{stat}\\n")
    os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["proxy"] + sys.argv[2:]
runpy.run_module("proxy", run_name="__main__")
"""


def image(i: int) -> tuple[bytes, bytes, bytes]:
    """Layer, config and manifest of image ``i``, all different from every other image's."""
    layer = (f"layer {i} ".encode() * 64)[:512]
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(Digest.of(layer)),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return layer, config, manifest


def repository(i: int) -> str:
    return f"bench/img{i}"


async def fill(cache: Path, count: int) -> None:
    """The stores as serving ``count`` images once would have left them."""
    index = DiskIndex(cache / "index")
    order = DiskOrder(cache / "index" / "order.sqlite3")
    blobs = cache / "blobs" / "sha256"
    now = time.time()
    for start in range(0, count, BATCH):
        entries: dict[Key, tuple[int, float]] = {}
        # One transaction per batch: a commit per write would make 100,000 images take minutes.
        with index._cache.transact():
            for i in range(start, min(count, start + BATCH)):
                layer, config, body = image(i)
                ref = RepoRef(UPSTREAM, repository(i))
                for data in (layer, config):
                    digest = Digest.of(data)
                    path = blobs / digest.hex[:2] / digest.hex
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    await index.record_use(Kind.BLOB, digest, ref, now)
                    entries[(Kind.BLOB, digest)] = (len(data), now)
                digest = Digest.of(body)
                await index.put_manifest(StoredManifest(digest, MANIFEST_TYPE, body))
                await index.record_use(Kind.MANIFEST, digest, ref, now)
                entries[(Kind.MANIFEST, digest)] = (len(body), now)
                key = TagKey(UPSTREAM, repository(i), "v1", (MANIFEST_TYPE,))
                await index.put_tag(key, TagEntry(digest, MANIFEST_TYPE, len(body), now))
        await order.stored(entries)
    await order.matched(await index.generation())
    await order.close()
    await index.close()


def memory(pid: int, when: str) -> dict[str, float]:
    """MB held by the server ``pid`` and its workers, named ``<figure>_<when>_mb``: VmRSS
    and PSS summed over them, RssAnon (the heap) and RssFile (mapped files: libraries, and
    SQLite's memory map of the index) summed, and each process's RSS and PSS (``_0`` the
    server or supervisor, then the workers)."""
    members = sorted(process_tree(pid))
    members.remove(pid)
    members.insert(0, pid)
    figures: dict[str, float] = {}
    for name, measure in (
        ("rss", rss),
        ("pss", pss),
        ("RssAnon", lambda p: status_bytes(p, "RssAnon")),
        ("RssFile", lambda p: status_bytes(p, "RssFile")),
    ):
        each = [measure(member) or 0 for member in members]
        if not any(each):
            raise RuntimeError(f"no {name} for {pid}")
        figures[f"{name}_{when}_mb"] = sum(each) / 2**20
        if name in ("rss", "pss"):
            for i, value in enumerate(each):
                figures[f"{name}_{when}_{i}_mb"] = value / 2**20
    return figures


async def pull(session: aiohttp.ClientSession, base: str, i: int) -> None:
    headers = {"Accept": MANIFEST_TYPE}
    url = f"{base}/v2/{repository(i)}"
    async with session.get(f"{url}/manifests/v1", headers=headers) as response:
        response.raise_for_status()
        body = await response.read()
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        async with session.get(f"{url}/blobs/{blob['digest']}") as response:
            response.raise_for_status()
            await response.read()


async def first_answer(
    base: str, path: str, started: float, server: subprocess.Popen[bytes]
) -> float:
    async with aiohttp.ClientSession() as session:
        while server.poll() is None:
            try:
                async with session.get(f"{base}{path}", headers={"Accept": MANIFEST_TYPE}) as r:
                    if r.status == 200:
                        await r.read()
                        return time.monotonic() - started
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.005)
    raise RuntimeError(f"the server exited with {server.returncode}")


async def pull_all(base: str, count: int, concurrency: int) -> None:
    queue = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            await pull(session, base, i)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def measure(cache: Path, count: int, args: argparse.Namespace) -> dict[str, float]:
    port = args.port
    config = {
        "listen": f"127.0.0.1:{port}",
        "cache_dir": str(cache),
        "default_upstream": UPSTREAM,
        "log_level": "warning",
        "offline": True,
        "upstreams": [{"name": UPSTREAM, "url": "http://127.0.0.1:9", "tag_ttl": 86400}],
    }
    if args.bounded:
        config["cache"] = {"max_size": 2**40}
    # Named by port, so that two versions may serve one cache directory side by side.
    (cache.parent / f"regcache-{port}.yaml").write_text(yaml.safe_dump(config))
    serve = ["serve", "--config", str(cache.parent / f"regcache-{port}.yaml")]
    trace = cache.parent / f"tracemalloc-{port}.txt"
    trace.unlink(missing_ok=True)
    if args.tracemalloc:
        command = [sys.executable, "-c", _TRACED, str(trace), *serve]
    else:
        command = [sys.executable, "-m", "proxy", *serve]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(args.code)} if args.code else None
    # Out of this directory with --code: ``-m`` puts the working directory first on the path.
    cwd = args.code if args.code else None
    server = subprocess.Popen(command, env=env, cwd=cwd)  # noqa: ASYNC220 (started once)
    try:
        figures = {"v2_s": await first_answer(base, "/v2/", started, server)}
        figures["first_hit_s"] = await first_answer(
            base, f"/v2/{repository(count - 1)}/manifests/v1", started, server
        )
        # CPU time is steadier than the wall clock on a shared machine.
        figures["first_hit_cpu_s"] = cpu_seconds(process_tree(server.pid)) or 0.0
        await asyncio.sleep(2)  # let start-up work in the background settle
        figures.update(memory(server.pid, "start"))
        if args.start_only:
            return figures
        if args.tracemalloc:
            server.send_signal(signal.SIGUSR1)
        began = time.monotonic()
        await pull_all(base, count, args.concurrency)
        figures["pull_s"] = time.monotonic() - began
        await asyncio.sleep(3)  # usage flushes
        figures.update(memory(server.pid, "warm"))
        if args.tracemalloc:
            server.send_signal(signal.SIGUSR1)
            while not trace.exists():  # noqa: ASYNC110 (another process writes it)
                await asyncio.sleep(1)
            await asyncio.sleep(1)
            print(trace.read_text())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/regcache-cachefill"))
    parser.add_argument("--port", type=int, default=5099)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bounded", action="store_true", help="with cache.max_size set")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--start-only", action="store_true", help="start-up and memory at start; no pulls"
    )
    parser.add_argument("--keep", action="store_true", help="reuse a filled directory")
    parser.add_argument("--code", type=Path, help="PYTHONPATH of the server: another version")
    args = parser.parse_args()
    cache = args.dir / f"cache-{args.count}"
    if not (args.keep and cache.exists()):
        shutil.rmtree(cache, ignore_errors=True)
        began = time.monotonic()
        asyncio.run(fill(cache, args.count))
        print(f"filled {args.count} images in {time.monotonic() - began:.1f} s", file=sys.stderr)
    figures = asyncio.run(measure(cache, args.count, args))
    for name in () if args.start_only else ("rss", "pss"):
        grown = figures[f"{name}_warm_mb"] - figures[f"{name}_start_mb"]
        figures[f"{name}_growth_mb_per_1000"] = grown / args.count * 1000
    print(json.dumps({"images": args.count, "bounded": args.bounded, **figures}, indent=1))
    os.sync()


if __name__ == "__main__":
    main()
