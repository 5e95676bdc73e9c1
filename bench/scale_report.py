"""The scale benchmark's table (rows per N, one column per peer, ratios regcache / peer) and
issue 13's goals judged against it, in the main benchmark's style (bench/report.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .report import Row, Target, _num
from .scale import PeerScale, ScaleRun, ScaleSettings

MB = 1e6


def build_rows(results: Mapping[str, PeerScale], settings: ScaleSettings) -> list[Row]:
    rows: list[Row] = []
    for n in settings.sizes:

        def each(get: Callable[[ScaleRun], float | None], n: int = n) -> dict[str, float | None]:
            return {p: (get(r.runs[n]) if n in r.runs else None) for p, r in results.items()}

        def rate(phase: str) -> Callable[[ScaleRun], float | None]:
            return lambda r: None if (p := getattr(r, phase)) is None else p.result.images_per_s

        def rps(phase: str) -> Callable[[ScaleRun], float | None]:
            return lambda r: None if (p := getattr(r, phase)) is None else p.result.requests_per_s

        def cpu(phase: str) -> Callable[[ScaleRun], float | None]:
            return lambda r: None if (p := getattr(r, phase)) is None else p.cpu_per_1000()

        def upstream(phase: str) -> Callable[[ScaleRun], float | None]:
            def get(r: ScaleRun) -> float | None:
                p = getattr(r, phase)
                if p is None or r.peer == "direct" or not p.result.images:
                    return None
                return float(p.upstream_requests / p.result.images)

            return get

        def client_cpu(r: ScaleRun) -> float | None:
            p = r.warm or r.cold
            if p is None or not p.result.images:
                return None
            return p.result.client_cpu_s / p.result.images * 1000

        def head_cpu(r: ScaleRun) -> float | None:
            h = r.heads
            if h is None or h.cpu_s is None or not h.result.requests:
                return None
            return h.cpu_s / h.result.requests * 1e6

        s = f"{n:,} images"
        rows += [
            Row(f"cold_ips_{n}", f"{s}: cold pulls, {settings.concurrency} at a time",
                "images/s", "higher", 0, each(rate("cold"))),
            Row(f"cold_rps_{n}", f"{s}: cold pulls", "req/s", "higher", 0, each(rps("cold"))),
            Row(f"cold_cpu_{n}", f"{s}: server CPU per 1,000 images, cold", "s", "lower", 2,
                each(cpu("cold"))),
            Row(f"cold_up_{n}", f"{s}: upstream requests per image, cold", "", "lower", 2,
                each(upstream("cold"))),
            Row(f"warm_ips_{n}", f"{s}: warm pulls, {settings.concurrency} at a time",
                "images/s", "higher", 0, each(rate("warm"))),
            Row(f"warm_rps_{n}", f"{s}: warm pulls", "req/s", "higher", 0, each(rps("warm"))),
            Row(f"warm_cpu_{n}", f"{s}: server CPU per 1,000 images, warm", "s", "lower", 2,
                each(cpu("warm"))),
            Row(f"client_cpu_{n}", f"{s}: load generator CPU per 1,000 images (warm)", "s",
                "lower", 2, each(client_cpu)),
            Row(f"warm_up_{n}", f"{s}: upstream requests per image, warm", "", "lower", 2,
                each(upstream("warm"))),
            Row(f"head_rps_{n}", f"{s}: tag HEADs at random, {settings.concurrency} conns",
                "req/s", "higher", 0, each(rate("heads"))),
            Row(f"head_cpu_{n}", f"{s}: server CPU per tag HEAD", "us", "lower", 0,
                each(head_cpu)),
            Row(f"head_up_{n}", f"{s}: upstream requests per tag HEAD", "", "lower", 3,
                each(upstream("heads"))),
            Row(f"rss_{n}", f"{s}: RSS after warming (all processes, shared pages in each)",
                "MB", "lower", 1, each(lambda r: _div(r.rss_warm, MB))),
            Row(f"pss_{n}", f"{s}: PSS after warming (all processes, shared pages once)",
                "MB", "lower", 1, each(lambda r: _div(r.pss_warm, MB))),
            Row(f"rss_growth_{n}", f"{s}: RSS growth per 1,000 images since start", "MB",
                "lower", 2, each(_growth_per_1000)),
            Row(f"pss_growth_{n}", f"{s}: PSS growth per 1,000 images since start", "MB",
                "lower", 2, each(lambda r: _growth_per_1000(r, "pss"))),
            Row(f"disk_{n}", f"{s}: disk used by the cache", "MB", "lower", 1,
                each(lambda r: _div(r.disk_bytes, MB))),
            Row(f"restart_v2_{n}", f"{s}: restart, until /v2/ answers", "s", "lower", 2,
                each(lambda r: r.restart.v2_s if r.restart else None)),
            Row(f"restart_hit_{n}", f"{s}: restart, until a cached manifest is served", "s",
                "lower", 2, each(lambda r: r.restart.first_hit_s if r.restart else None)),
            Row(f"restart_up_{n}", f"{s}: restart, upstream requests until then", "", "lower",
                0, each(lambda r: r.restart.upstream_requests if r.restart else None)),
        ]  # fmt: skip

    def conn(get: Callable[[Any], float | None]) -> dict[str, float | None]:
        return {p: (get(r.connections) if r.connections else None) for p, r in results.items()}

    b, i = settings.burst, settings.idle
    rows += [
        Row("burst_dropped", f"{b:,} simultaneous connects: SYNs dropped", "", "lower", 0,
            conn(lambda c: c.burst.dropped_syns)),
        Row("burst_connect", f"{b:,} simultaneous connects: time to connect all", "s",
            "lower", 2, conn(lambda c: c.burst.connect_all_s)),
        Row("burst_answer", f"{b:,} simultaneous connects: time until all answered", "s",
            "lower", 2, conn(lambda c: c.burst.answer_all_s)),
        Row("idle_open", f"{i:,} idle keep-alive connections: open after "
            f"{settings.hold_seconds:g} s", "", "higher", 0,
            conn(lambda c: c.held.open_after_hold)),
        Row("idle_mb", f"{i:,} idle keep-alive connections: RSS per 1,000", "MB", "lower", 2,
            conn(lambda c: c.mb_per_1000())),
    ]  # fmt: skip
    return rows


def _div(value: float | None, by: float) -> float | None:
    return None if value is None else value / by


def _growth_per_1000(run: ScaleRun, measure: str = "rss") -> float | None:
    """``measure``: "rss" or "pss" (ScaleRun's fields)."""
    warm, fresh = getattr(run, f"{measure}_warm"), getattr(run, f"{measure}_fresh")
    if warm is None or fresh is None:
        return None
    return float(warm - fresh) / MB / run.images * 1000


def rss_slope(result: PeerScale, measure: str = "rss") -> float | None:
    """MB of RSS (or PSS) per 1,000 more images, between the smallest and largest N
    measured."""
    runs = [r for r in result.runs.values() if getattr(r, f"{measure}_warm") is not None]
    if len(runs) < 2:
        return None
    low, high = min(runs, key=lambda r: r.images), max(runs, key=lambda r: r.images)
    grown = getattr(high, f"{measure}_warm") - getattr(low, f"{measure}_warm")
    return float(grown) / MB / (high.images - low.images) * 1000


def judge(
    rows: Sequence[Row], results: Mapping[str, PeerScale], settings: ScaleSettings
) -> list[Target]:
    """Issue 13's goals that the scale part measures, for regcache."""
    by_key = {row.key: row for row in rows}
    targets = []

    def ratio_goal(key: str, what: str, floor: float) -> None:
        row = by_key[key]
        mine, ratio = row.values.get("regcache"), row.ratio("nginx")
        targets.append(
            Target(
                what,
                f">= {floor:.1f}x nginx",
                f"{_num(mine, 0)} vs {_num(row.values.get('nginx'), 0)} {row.unit}: "
                f"{_num(ratio, 2)}x",
                None if ratio is None else ratio >= floor,
            )
        )

    for n in settings.sizes:
        ratio_goal(f"cold_ips_{n}", f"cold small images, {n:,}, images/s", 1.0)
    for n in settings.sizes:
        ratio_goal(f"warm_ips_{n}", f"warm small images, {n:,}, images/s", 1.2)
    mine = results.get("regcache")
    conns = mine.connections if mine else None
    targets.append(
        Target(
            f"{settings.burst:,} simultaneous connections: dropped SYNs",
            "0",
            "-"
            if conns is None
            else f"{conns.burst.dropped_syns} (all connected in {conns.burst.connect_all_s:.2f} s)",
            None if conns is None else conns.burst.dropped_syns == 0,
        )
    )
    targets.append(
        Target(
            f"{settings.idle:,} idle keep-alive connections held",
            f"{settings.idle:,} open after {settings.hold_seconds:g} s, MB per 1,000 reported",
            "-"
            if conns is None
            else f"{conns.held.open_after_hold:,} open, "
            f"{_num(conns.mb_per_1000(), 2)} MB per 1,000",
            None if conns is None else conns.held.open_after_hold == settings.idle,
        )
    )
    largest = max(settings.sizes)
    run = mine.runs.get(largest) if mine else None
    slope = rss_slope(mine) if mine else None
    growth = _growth_per_1000(run) if run else None
    per_1000 = slope if slope is not None else growth
    how = "between the sizes" if slope is not None else f"growth since start at {largest:,}"
    # PSS beside it: the summed RSS of a supervisor and its workers counts shared pages twice.
    pss_slope = rss_slope(mine, "pss") if mine else None
    pss_growth = _growth_per_1000(run, "pss") if run else None
    pss_1000 = pss_slope if slope is not None else pss_growth
    targets.append(
        Target(
            "RSS per 1,000 cached images",
            "<= 1.0 MB",
            f"{_num(per_1000, 2)} MB ({how}); {_num(per_1000, 2)}x the target; "
            f"PSS {_num(pss_1000, 2)} MB",
            None if per_1000 is None else per_1000 <= 1.0,
        )
    )
    big = mine.runs.get(100_000) if mine else None
    rss_big = None if big is None or big.rss_warm is None else big.rss_warm / MB
    pss_big = None if big is None or big.pss_warm is None else big.pss_warm / MB
    targets.append(
        Target(
            "RSS with 100,000 images cached",
            "< 150 MB",
            "not measured (use --full)"
            if big is None
            else f"{_num(rss_big, 1)} MB (PSS {_num(pss_big, 1)} MB)",
            None if rss_big is None else rss_big < 150,
        )
    )
    restart = run.restart if run else None
    for field_name, what, limit in (("v2_s", "/v2/ answers", 1.0), ("first_hit_s", "first "
                                    "cache hit served", 2.0)):  # fmt: skip
        value = None if restart is None else getattr(restart, field_name)
        targets.append(
            Target(
                f"start-up with {largest:,} images cached: {what}",
                f"<= {limit:g} s",
                f"{_num(value, 2)} s"
                + ("" if value is None else f" ({value / limit:.2f}x the limit)")
                + ("" if restart is None else f", {restart.upstream_requests} upstream requests"),
                None if value is None else value <= limit,
            )
        )
    return targets


def to_json(results: Mapping[str, PeerScale]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, result in results.items():
        raw = dataclasses.asdict(result)
        for n, run in result.runs.items():
            for phase in ("cold", "warm", "heads"):
                p = getattr(run, phase)
                if p is not None:
                    raw["runs"][n][phase]["images_per_s"] = p.result.images_per_s
                    raw["runs"][n][phase]["requests_per_s"] = p.result.requests_per_s
                    raw["runs"][n][phase]["cpu_s_per_1000_images"] = p.cpu_per_1000()
        if result.connections is not None:
            raw["connections"]["mb_per_1000"] = result.connections.mb_per_1000()
        raw["rss_mb_per_1000_images_between_sizes"] = rss_slope(result)
        raw["pss_mb_per_1000_images_between_sizes"] = rss_slope(result, "pss")
        out[name] = raw
    return out
