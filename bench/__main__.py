"""``python -m bench [--quick] [--json PATH] [--replicas N]``: regcache side by side with its
peers, and with ``--replicas`` a fleet of N replicas sharing Redis and S3 (bench/fleet.py).
``python -m bench scale ...``: the scale part (bench/scale_cli.py).

Everything runs on 127.0.0.1: one upstream registry (Debian's docker-registry) and, one at a
time, regcache, Distribution in proxy mode, nginx with a digest-keyed cache, and "direct"
(no proxy). Everything started is stopped on the way out, on success, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from . import environment, report
from .fleet import Fleet
from .peers import Direct, DistributionProxy, Nginx, Peer, Regcache, Upstream
from .prereqs import MissingTool, ensure_tools
from .profile import ProfileSummary, py_spy
from .scenarios import MB, REPOSITORY, TAG, PeerResult, Settings, prepare_image, run_peer

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
PEER_NAMES = ("direct", "regcache", "distribution", "nginx")

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["soak"]:
        from . import soak

        return soak.main(argv[1:])
    if argv[:1] == ["scale"]:
        from .scale_cli import main as scale_main

        return scale_main(argv[1:])
    args = _parser().parse_args(argv)
    settings = Settings.short() if args.quick else Settings.full()
    if args.cold_clients:
        settings = dataclasses.replace(settings, cold_clients=args.cold_clients)
    if args.peers is None:
        # A fleet is measured against one regcache and the upstream itself; the other peers
        # would double the run for figures the plain run gives.
        args.peers = ["direct", "regcache"] if args.replicas else list(PEER_NAMES)
    return guarded(
        "bench",
        lambda: _run(args, settings),
        install=not args.no_install,
        fleet=args.replicas is not None,
        profile=args.profile is not None,
    )


def guarded(
    prog: str, run: Callable[[], int], *, install: bool, fleet: bool = False, profile: bool = False
) -> int:
    """``run()`` once the tools are there, Ctrl-C and SIGTERM unwinding through its finally
    blocks; the exit status: 2 for a missing tool, 130 when interrupted."""
    try:
        ensure_tools(install=install, fleet=fleet)
        if profile:
            py_spy()
    except (MissingTool, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout, `kill`) must unwind through the finally blocks like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run()
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130


def tear_down(
    peers: Sequence[Peer], upstream: Upstream, runner: _Runner, work: Path, keep: bool
) -> None:
    """Everything a run started stopped, its work directory removed unless kept."""
    for peer in peers:
        peer.stop()
    upstream.stop()
    runner.close()
    if keep:
        print(f"bench: kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    log = _logger(started)
    work = Path(tempfile.mkdtemp(prefix="regcache-bench-", dir=args.work_dir))
    upstream = Upstream(work / "upstream")
    peers: list[Peer] = []
    profiles: list[ProfileSummary] = []
    results: dict[str, PeerResult] = {}
    load_before = environment.load_average()
    runner = _Runner()
    try:
        upstream.start()
        sizes = ", ".join(f"{s / MB:g} MB" for s in settings.layer_sizes)
        log(f"building bench/app:v1 (layers {sizes}) and pushing it to {upstream.url}")
        image = prepare_image(work / "layout", upstream, settings)
        peers = _make_peers(
            args.peers, upstream, work, args.regcache_event_loop, args.regcache_workers
        )
        if args.replicas:
            peers.append(Fleet(upstream, work / "fleet", args.replicas))
        for peer in peers:
            try:
                results[peer.name] = runner.run(
                    run_peer(
                        peer,
                        upstream,
                        image,
                        settings,
                        work / "scratch",
                        log,
                        profile_dir=args.profile,
                        profiles=profiles,
                    )
                )
                if isinstance(peer, Regcache):
                    results[peer.name].notes.append(f"event loop: {peer.event_loop()}")
            finally:
                # Only the peer being measured runs, so no idle process holds memory or CPU.
                peer.stop()
        elapsed = time.monotonic() - started
        order = report.peer_order(list(results))
        rows = report.build_rows({p: results[p] for p in order}, settings)
        targets = report.judge(rows, settings)
        _print_report(rows, targets, results, order, settings, profiles, elapsed)
        context = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if settings.quick else "full",
            "duration_s": round(elapsed, 1),
            "machine": environment.machine(),
            "load_average": {"before": load_before, "after": environment.load_average()},
            "versions": environment.versions(),
            "load_generators": {
                "cold_pull": "skopeo copy docker://... dir:... (one process per client)",
                "warm_blob": "curl to /dev/null (one process per client)",
                "tag_head": "bench/loadgen.py: raw asyncio HEAD client, one process",
            },
            "settings": _settings_json(settings),
            "image": {
                "reference": f"{REPOSITORY}:{TAG}",
                "manifest_digest": image.manifest_digest,
                "blobs": {d: s for d, s in zip(image.layer_digests, image.layer_sizes, strict=True)}
                | {image.config_digest: len(image.config)},
            },
            "markdown_table": report.render_markdown(rows, order),
        }
        document = report.to_json(
            rows=rows, targets=targets, results=results, profiles=profiles, context=context
        )
        report.write_json(args.json, document)
        args.json.with_suffix(".md").write_text(report.render_markdown(rows, order) + "\n")
        print(f"\nwrote {args.json} (and {args.json.with_suffix('.md').name})")
        return 0
    finally:
        tear_down(peers, upstream, runner, work, args.keep)


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--regcache-workers",
        type=int,
        metavar="N",
        help="run regcache with this many workers (default: its own default, one per CPU)",
    )


def _make_peers(
    names: Sequence[str],
    upstream: Upstream,
    work: Path,
    regcache_loop: str | None,
    regcache_workers: int | None,
) -> list[Peer]:
    made: dict[str, Callable[[], Peer]] = {
        "direct": lambda: Direct(upstream),
        "regcache": lambda: Regcache(upstream, work / "regcache", regcache_loop, regcache_workers),
        "distribution": lambda: DistributionProxy(upstream, work / "distribution"),
        "nginx": lambda: Nginx(upstream, work / "nginx"),
    }
    return [made[name]() for name in names]


def _print_report(
    rows: Sequence[report.Row],
    targets: Sequence[report.Target],
    results: dict[str, PeerResult],
    order: Sequence[str],
    settings: Settings,
    profiles: Sequence[ProfileSummary],
    elapsed: float,
) -> None:
    mode = "QUICK" if settings.quick else "FULL"
    blob = max(settings.layer_sizes) / MB
    print(f"\n== regcache benchmark ({mode} run, {elapsed:.0f} s) ==")
    if settings.quick:
        print(
            f"quick mode: smaller image (largest layer {blob:.0f} MB instead of 200 MB), "
            f"{settings.sequential_fetches} sequential fetches, "
            f"{settings.head_duration:g} s of tag HEADs: figures are indicative only"
        )
    print("rc/<peer> = regcache / peer; MB = 10^6 bytes; 'better' says which way is good")
    starts = [r.load_average["start"][0] for r in results.values() if r.load_average]
    busiest = max(starts, default=0.0)
    if busiest > 1.0:
        # Two cores: anything else running takes from the servers and the load generators.
        print(
            f"WARNING: the machine was busy (1-min load average up to {busiest:.1f} at a "
            "peer's start): rates and wall times are noisy; CPU-per-unit rows are steadier"
        )
    print()
    print(report.render_text(rows, order))
    print(f"\nupstream requests during the {settings.cold_clients}-client cold pull:")
    print(report.render_upstream_detail(results, settings.cold_clients))
    print("\ntargets (issues 3 and 13; the scale goals: python -m bench scale):")
    print(report.render_targets(targets))
    notes = [f"  {name}: {note}" for name, r in results.items() for note in r.notes]
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    for summary in profiles:
        print(f"\nprofile {summary.phase}: {summary.samples} samples, {summary.raw_path}")
        for spot in summary.self_time[:10]:
            print(f"  self {spot.share:6.1%}  {spot.function}")


def _settings_json(settings: Settings) -> dict[str, Any]:
    return {
        "quick": settings.quick,
        "layer_sizes": list(settings.layer_sizes),
        "cold_clients": settings.cold_clients,
        "sequential_fetches": settings.sequential_fetches,
        "parallel_clients": settings.parallel_clients,
        "parallel_fetches_each": settings.parallel_fetches_each,
        "head_connections": settings.head_connections,
        "head_duration_s": settings.head_duration,
        "head_warmup_s": settings.head_warmup,
    }


class _Runner:
    """One event loop for the whole run, uvloop when installed, like regcache's own."""

    def __init__(self) -> None:
        try:
            import uvloop
        except ImportError:
            self._runner = asyncio.Runner()
        else:
            self._runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        self._runner.close()


def _logger(started: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    return log


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _peer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"peers are {', '.join(PEER_NAMES)}; got {text!r}")
    return names


def _replica_count(text: str) -> int:
    count = int(text)
    if not 2 <= count <= 8:
        raise argparse.ArgumentTypeError(f"--replicas takes 2 to 8, got {count}")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark regcache against Distribution's proxy mode and an nginx "
        "blob cache, all on 127.0.0.1, and print a table of figures and ratios.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller image (largest layer 50 MB), fewer repetitions, 3 s of tag HEADs: "
        "under 3 minutes on 2 cores",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write the results (default: bench/results/latest.json; a Markdown "
        "table goes beside it with the .md suffix)",
    )
    parser.add_argument(
        "--peers",
        type=_peer_list,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(PEER_NAMES)} (default: all; "
        "with --replicas: direct,regcache)",
    )
    parser.add_argument(
        "--replicas",
        type=_replica_count,
        metavar="N",
        help="also measure N regcache replicas sharing a redis-server and a Ceph RGW bucket "
        "(started here), cold-pull clients spread over them; e.g. 3",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample regcache with py-spy during each of its scenarios; raw stacks go to DIR",
    )
    add_workers_option(parser)
    parser.add_argument(
        "--regcache-event-loop",
        choices=("auto", "asyncio", "uvloop"),
        help="run regcache with this event_loop setting (default: its own default, auto)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of apt-get installing missing tools (nginx, skopeo, ...)",
    )
    parser.add_argument(
        "--cold-clients",
        type=int,
        metavar="N",
        help="concurrent clients of the second cold pull (default 16; the issue's fleet "
        "figure is for 48)",
    )
    parser.add_argument("--work-dir", type=Path, help="parent of the temporary work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


if __name__ == "__main__":
    sys.exit(main())
