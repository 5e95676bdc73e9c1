"""``python -m bench scale [--images N | --full] [--peers LIST]``: the scale part of the
benchmark (bench/scale.py), its table and issue 13's goals, JSON and Markdown beside them."""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import environment, report, scale_report, synthetic
from .__main__ import (
    PEER_NAMES,
    _logger,
    _make_peers,
    _peer_list,
    _Runner,
    add_workers_option,
    guarded,
    tear_down,
)
from .connections import raise_nofile
from .peers import Upstream
from .scale import PeerScale, ScaleSettings, run_peer
from .scenarios import expect_manifest

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scale.json"
DEFAULT_SIZES = (2_000, 10_000)
FULL_SIZE = 100_000


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    sizes = (args.images,) if args.images else DEFAULT_SIZES + ((FULL_SIZE,) if args.full else ())
    settings = ScaleSettings(
        sizes=tuple(sizes),
        concurrency=args.concurrency,
        client_processes=args.client_processes,
        head_seconds=args.head_seconds,
        burst=args.burst,
        idle=args.idle,
        hold_seconds=args.hold,
    )
    return guarded("bench scale", lambda: _run(args, settings), install=not args.no_install)


def _run(args: argparse.Namespace, settings: ScaleSettings) -> int:
    started = time.monotonic()
    log = _logger(started)
    # The servers started below inherit the limit: 10,000 connections need as many descriptors.
    nofile = raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="regcache-scale-", dir=args.work_dir))
    upstream = Upstream(work / "upstream")
    runner = _Runner()
    peers = _make_peers(args.peers, upstream, work, None, args.regcache_workers)
    results: dict[str, PeerScale] = {}
    load_before = environment.load_average()
    try:
        count = max(settings.sizes)
        log(f"writing {count:,} synthetic images into the upstream's storage")
        synthetic.write_images(upstream.registry.storage_dir, count)
        written = time.monotonic() - started
        log(f"wrote {count:,} images in {written:.1f} s")
        upstream.start()
        _check_upstream(upstream, count)
        for peer in peers:
            try:
                results[peer.name] = runner.run(run_peer(peer, upstream, settings, log))
            finally:
                peer.stop()
        elapsed = time.monotonic() - started
        order = report.peer_order(list(results))
        rows = scale_report.build_rows({p: results[p] for p in order}, settings)
        targets = scale_report.judge(rows, results, settings)
        print(f"\n== regcache scale benchmark ({elapsed:.0f} s; sizes {settings.sizes}) ==")
        print(
            f"{settings.concurrency} connections over {settings.client_processes} client "
            f"processes; RLIMIT_NOFILE {nofile} (servers inherit it); rc/<peer> = regcache / "
            "peer; MB = 10^6 bytes; the machine's 2 cores are shared by client and server"
        )
        print(report.render_text(rows, order))
        print("\ngoals (issue 13, scale part):")
        print(report.render_targets(targets))
        notes = [f"  {name}: {note}" for name, r in results.items() for note in r.notes]
        if notes:
            print("\nnotes:\n" + "\n".join(notes))
        markdown = report.render_markdown(rows, order)
        document = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "duration_s": round(elapsed, 1),
            "synthetic_write_s": round(written, 1),
            "machine": environment.machine(),
            "load_average": {"before": load_before, "after": environment.load_average()},
            "versions": environment.versions(),
            "settings": {**vars(settings), "sizes": list(settings.sizes), "nofile": nofile},
            "rows": [
                {**vars(r), "ratios": {f"regcache/{p}": r.ratio(p) for p in report.COMPARED}}
                for r in rows
            ],
            "targets": [vars(t) for t in targets],
            "peers": scale_report.to_json(results),
            "markdown_table": markdown,
        }
        report.write_json(args.json, document)
        targets_md = "\n".join(
            f"| {t.what} | {t.wanted} | {t.measured} | "
            f"{ {True: 'met', False: 'missed', None: 'n/a'}[t.met] } |"
            for t in targets
        )
        args.json.with_suffix(".md").write_text(
            f"{markdown}\n\n| goal | target | measured | |\n|---|---|---|---|\n{targets_md}\n"
        )
        print(f"\nwrote {args.json} (and {args.json.with_suffix('.md').name})")
        return 0
    finally:
        tear_down(peers, upstream, runner, work, args.keep)


def _check_upstream(upstream: Upstream, count: int) -> None:
    """The last image written is served, digest for digest, before any peer is measured."""
    image = synthetic.describe(count - 1)
    url = f"{upstream.url}/v2/{image.repository}/manifests/{image.tag}"
    expect_manifest("GET", url, image.manifest_digest, "the upstream")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench scale",
        description="Pull N synthetic small images cold and warm through each peer, send tag "
        "HEADs over them, measure RSS, disk and restart time, then 1,000 simultaneous and "
        "10,000 idle connections; print a table and issue 13's goals.",
    )
    parser.add_argument(
        "--images", type=_positive, metavar="N", help="one size instead of 2,000 and 10,000"
    )
    parser.add_argument("--full", action="store_true", help="also 100,000 images")
    parser.add_argument(
        "--peers",
        type=_peer_list,
        default=list(PEER_NAMES),
        metavar="LIST",
        help=f"comma-separated subset of {','.join(PEER_NAMES)} (default: all)",
    )
    add_workers_option(parser)
    parser.add_argument("--concurrency", type=_positive, default=64)
    parser.add_argument("--client-processes", type=_positive, default=2)
    parser.add_argument("--head-seconds", type=float, default=10.0)
    parser.add_argument(
        "--burst", type=_positive, default=1000, help="simultaneous connects (default 1,000)"
    )
    parser.add_argument(
        "--idle",
        type=_positive,
        default=10_000,
        help="idle keep-alive connections held (default 10,000)",
    )
    parser.add_argument(
        "--hold", type=float, default=10.0, help="seconds the idle connections are held"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="default bench/results/scale.json, a .md beside it",
    )
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--work-dir", type=Path, help="parent of the temporary work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser  # fmt: skip
