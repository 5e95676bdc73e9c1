"""``python -m bench soak [--minutes 10]``: regcache under mixed load for minutes, with the upstream
failing part of the time, and its memory and open files watched.

Everything runs on 127.0.0.1: Debian's docker-registry holding the soak's images (written
straight into its storage, bench/soakimages.py), the fault proxy in front of it
(bench/soakfaults.py), ``python -m proxy serve`` pulling through the fault proxy, and the
clients (bench/soakload.py) in this process. Every 10 s the resident memory and open file
descriptors of regcache's processes (the server and any workers it forks) are summed.

The goals (issue 13, Soak): RSS and FDs at the end within 10% of the figures after the first
minute; no wrong byte; no 5xx for content already served once. The exit status is 1 when one
is missed, 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.regcache import RegcacheProcess

from . import environment
from .peers import REGCACHE_UPSTREAM, Upstream
from .procfs import fd_kinds, open_fds, process_tree, rss
from .soakfaults import FaultProxy
from .soakimages import MB, write_images
from .soakload import Load
from .soakreport import describe_kinds, judge, render_markdown, render_text

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "soak.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class SoakSettings:
    minutes: float = 10.0
    workers: int = 8
    large_sizes: tuple[int, ...] = (20 * MB, 45 * MB)
    seed: int = 13
    sample_every: float = 10.0
    # Short, so tags are revalidated (and stale-served) while the upstream fails.
    tag_ttl: float = 5.0
    # Shorter than the fault proxy's longest stall, so regcache's resumes are exercised.
    read_timeout: float = 4.0
    # None: about one new image a second, cold pulls for the whole soak. Fewer tells a leak
    # per request from memory that grows with the images cached.
    images: int | None = None
    # aiohttp closes a pooled connection idle for 15 s at its next cleanup, up to 15 s later:
    # after 32 s regcache holds no idle connection to the upstream, only what it keeps open.
    quiet_settle: float = 32.0

    @property
    def duration(self) -> float:
        return self.minutes * 60

    @property
    def small_images(self) -> int:
        return self.images or max(30, int(self.duration))

    @property
    def fault_cycle(self) -> float:
        """Seconds of one healthy + faulty window pair: several pairs in any soak."""
        return min(45.0, max(6.0, self.duration / 12))

    @property
    def baseline_at(self) -> float:
        """When the reference figures are taken: after minute 1 (earlier in a short soak)."""
        return min(60.0, self.duration / 3)


@dataclass(frozen=True)
class Sample:
    t: float
    label: str  # "load", or one of the quiet points the goals compare
    rss_bytes: int
    fds: int
    fd_kinds: dict[str, int]
    processes: int
    requests: int
    faults: int
    fault_window: bool


async def soak(settings: SoakSettings, work: Path, log: Log) -> tuple[dict[str, Any], list[Sample]]:
    """The soak itself: its figures and the samples taken."""
    upstream = Upstream(work / "upstream")
    log(f"writing {settings.small_images} small and {len(settings.large_sizes)} large images")
    smalls, larges = write_images(
        upstream.registry.storage_dir, settings.small_images, settings.large_sizes, settings.seed
    )
    faults = FaultProxy(upstream.url, settings.seed, settings.fault_cycle, work / "faults.log")
    regcache: RegcacheProcess | None = None
    try:
        upstream.start()
        faults.start()
        entry = {
            "name": REGCACHE_UPSTREAM,
            "url": faults.url,
            "tag_ttl": settings.tag_ttl,
            "read_timeout": settings.read_timeout,
        }
        config = {"upstreams": [entry], "default_upstream": REGCACHE_UPSTREAM}
        regcache = RegcacheProcess(config, work_dir=work / "regcache", default_workers=True)
        regcache.start()
        assert regcache.pid is not None
        log(
            f"regcache {regcache.url} (pid {regcache.pid}) -> faults {faults.url} -> {upstream.url}"
        )
        load = Load(
            regcache.url,
            smalls,
            larges,
            duration=settings.duration,
            seed=settings.seed,
            quiet_settle=settings.quiet_settle,
        )
        samples: list[Sample] = []

        async def on_quiet(label: str) -> None:
            samples.append(await _take(pid, load, faults, label))
            log(_describe(samples[-1]))

        pid = regcache.pid
        sampler = asyncio.create_task(_sample(pid, load, faults, settings, samples, log))
        try:
            await load.run(settings.workers, settings.baseline_at, on_quiet)
        finally:
            sampler.cancel()
        fault_stats = await asyncio.to_thread(faults.stats)
        figures = {
            "requests": {k: dict(v) for k, v in sorted(load.tally.requests.items())},
            "outcomes": dict(load.tally.outcomes()),
            "pulls": dict(load.tally.pulls),
            "requests_total": load.tally.total,
            "bytes_checked": load.tally.bytes_checked,
            "wrong_bytes": load.tally.wrong_count,
            "wrong_examples": load.tally.wrong,
            "cached_5xx": load.tally.cached_5xx_count,
            "cached_5xx_examples": load.tally.cached_5xx,
            "images": {"small": len(smalls), "large": len(larges), "pulled": len(load.pulled)},
            "faults": fault_stats,
            "regcache_counters": await asyncio.to_thread(_counters, regcache),
            "regcache_log_errors": _log_errors(regcache.log_text()),
        }
        return figures, samples
    finally:
        if regcache is not None:
            regcache.stop()
        faults.stop()
        upstream.stop()


async def _sample(
    pid: int,
    load: Load,
    faults: FaultProxy,
    settings: SoakSettings,
    samples: list[Sample],
    log: Log,
) -> None:
    while True:
        await asyncio.sleep(settings.sample_every)
        samples.append(await _take(pid, load, faults, "settling" if load.quiet else "load"))
        log(_describe(samples[-1]))


async def _take(pid: int, load: Load, faults: FaultProxy, label: str) -> Sample:
    pids = process_tree(pid)
    stats = await asyncio.to_thread(faults.stats)
    return Sample(
        t=round(time.monotonic() - load.started, 1),
        label=label,
        rss_bytes=sum(rss(p) or 0 for p in pids),
        fds=sum(open_fds(p) or 0 for p in pids),
        fd_kinds=dict(sum((Counter(fd_kinds(p)) for p in pids), Counter())),
        processes=len(pids),
        requests=load.tally.total,
        faults=int(stats["faults_total"]),
        fault_window=bool(stats["faulty_now"]),
    )


def _describe(sample: Sample) -> str:
    return (
        f"t={sample.t:5.0f}s {sample.label:20s} rss={sample.rss_bytes / 2**20:6.1f} MiB "
        f"fds={sample.fds:4d} ({describe_kinds(sample.fd_kinds)}) procs={sample.processes} "
        f"requests={sample.requests} "
        f"faults={sample.faults}{' (fault window)' if sample.fault_window else ''}"
    )


# Counters regcache keeps of what the faults made it do, and the label that splits each.
WATCHED = {
    "regcache_cache_requests_total": ("kind", "result"),
    "regcache_upstream_requests_total": ("method", "status"),
    "regcache_upstream_resumes_total": (),
    "regcache_stale_served_total": (),
    "regcache_digest_mismatch_total": ("kind",),
    "regcache_dedup_joins_total": ("kind",),
}


def _counters(regcache: RegcacheProcess) -> dict[str, float]:
    found: dict[str, float] = {}
    for (name, labels), value in regcache.metrics().items():
        if name in WATCHED:
            split = dict(labels)
            key = " ".join([name, *(split.get(label, "") for label in WATCHED[name])])
            found[key] = found.get(key, 0.0) + value
    return dict(sorted(found.items()))


def _log_errors(text: str) -> list[str]:
    """The first tracebacks and ERROR lines regcache logged: what a 5xx or a leak points at."""
    lines = [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line]
    return lines[:20]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = SoakSettings(minutes=args.minutes, seed=args.seed, images=args.images)
    if args.large_mb:
        sizes = tuple(int(mb * MB) for mb in args.large_mb)
        settings = dataclasses.replace(settings, large_sizes=sizes)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="regcache-soak-", dir=args.work_dir))
    load_before = environment.load_average()
    try:
        figures, samples = asyncio.run(soak(settings, work, log))
        document = result_document(settings, figures, samples)
        document["load_average"] = {"before": load_before, "after": environment.load_average()}
        document["machine"] = environment.machine()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        args.json.with_suffix(".md").write_text(render_markdown(document) + "\n")
        print()
        print(render_text(document))
        print(f"\nwrote {args.json} (and {args.json.with_suffix('.md').name})", flush=True)
    except KeyboardInterrupt:
        print("\nsoak: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"soak: kept {work}", file=sys.stderr)
        else:
            # Last: deleting the cache and the upstream's storage can take a while.
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(goal["met"] for goal in document["goals"]) else 1


def result_document(
    settings: SoakSettings, figures: dict[str, Any], samples: Sequence[Sample]
) -> dict[str, Any]:
    return {
        "settings": {
            "minutes": settings.minutes,
            "workers": settings.workers,
            "large_sizes": list(settings.large_sizes),
            "small_images": settings.small_images,
            "seed": settings.seed,
            "tag_ttl": settings.tag_ttl,
            "read_timeout": settings.read_timeout,
            "fault_cycle_s": settings.fault_cycle,
            "baseline_at_s": settings.baseline_at,
            "quiet_settle_s": settings.quiet_settle,
        },
        "figures": figures,
        "samples": [asdict(s) for s in samples],
        "goals": judge(figures, [asdict(s) for s in samples], settings.baseline_at),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak",
        description="Mixed load on regcache for MINUTES with the upstream failing part of the "
        "time; reports RSS and open FDs over time, wrong bytes and 5xx for cached content.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--seed", type=int, default=13, help="images, load and faults")
    parser.add_argument(
        "--images",
        type=int,
        metavar="N",
        help="small images, appearing evenly over the soak (default: one per second)",
    )
    parser.add_argument(
        "--large-mb",
        type=float,
        nargs="+",
        metavar="MB",
        help="the large images' big layer sizes in MB (default 20 45)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write the results (default: bench/results/soak.json, and .md beside)",
    )
    parser.add_argument("--work-dir", type=Path, help="parent of the temporary work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser
