"""The scale benchmark's goals, judged from figures given here rather than measured."""

from __future__ import annotations

from bench import scale_report
from bench.connections import Burst, Held
from bench.scale import ConnectionRun, PeerScale, Phase, Restart, ScaleRun, ScaleSettings
from bench.scaleclient import PullResult

SETTINGS = ScaleSettings(sizes=(2_000, 10_000), idle=10_000)
MB = 1_000_000


def pulls(images: int, seconds: float) -> Phase:
    return Phase(PullResult(images, 3 * images, seconds), cpu_s=1.0, upstream_requests=0)


def peer(name: str, cold_s: float, warm_s: float, rss: dict[int, int]) -> PeerScale:
    result = PeerScale(name, name)
    for n in SETTINGS.sizes:
        result.runs[n] = ScaleRun(
            name,
            n,
            cold=pulls(n, cold_s * n / 1000),
            warm=pulls(n, warm_s * n / 1000),
            rss_fresh=40 * MB,
            rss_warm=rss[n],
            # Half of it shared between the processes.
            pss_fresh=20 * MB,
            pss_warm=rss[n] // 2,
            restart=Restart(v2_s=0.5, first_hit_s=2.5, upstream_requests=0),
        )
    result.connections = ConnectionRun(
        Burst(1000, dropped_syns=0, connect_all_s=0.1, answer_all_s=0.3, answered=1000),
        Held(10_000, 10_000, 9_990, 10.0, 2.0, {}),
        rss_before=50 * MB,
        rss_held=90 * MB,
    )
    return result


def test_goals_are_judged_from_the_ratios_and_the_growth_between_sizes() -> None:
    results = {
        # 1 s per 1,000 images cold is 1,000 images/s; nginx does 800 cold and 1,000 warm.
        "regcache": peer("regcache", 1.0, 0.5, {2_000: 60 * MB, 10_000: 64 * MB}),
        "nginx": peer("nginx", 1.25, 1.0, {2_000: 20 * MB, 10_000: 20 * MB}),
    }
    rows = scale_report.build_rows(results, SETTINGS)
    goals = {t.what: t for t in scale_report.judge(rows, results, SETTINGS)}

    assert goals["cold small images, 2,000, images/s"].met is True  # 1.25x >= 1.0x
    assert goals["warm small images, 10,000, images/s"].met is True  # 2.0x >= 1.2x
    assert goals["1,000 simultaneous connections: dropped SYNs"].met is True
    # 10 of the 10,000 were closed during the hold.
    held = goals["10,000 idle keep-alive connections held"]
    assert held.met is False
    assert "4.00 MB per 1,000" in held.measured
    # 4 MB more for 8,000 more images: 0.5 MB per 1,000.
    rss = goals["RSS per 1,000 cached images"]
    assert (rss.met, rss.measured.split()[0]) == (True, "0.50")
    # PSS beside it: 2 MB more for 8,000 more images.
    assert "PSS 0.25 MB" in rss.measured
    by_key = {row.key: row for row in rows}
    assert by_key["pss_10000"].values["regcache"] == 32
    assert by_key["pss_growth_2000"].values["regcache"] == 5  # (30 - 20) MB / 2,000 images
    assert goals["RSS with 100,000 images cached"].met is None
    assert goals["start-up with 10,000 images cached: /v2/ answers"].met is True
    assert goals["start-up with 10,000 images cached: first cache hit served"].met is False


def test_a_peer_not_run_leaves_its_goals_unjudged() -> None:
    results = {"regcache": peer("regcache", 1.0, 0.5, {2_000: 60 * MB, 10_000: 64 * MB})}
    rows = scale_report.build_rows(results, SETTINGS)
    goals = {t.what: t for t in scale_report.judge(rows, results, SETTINGS)}
    assert goals["cold small images, 2,000, images/s"].met is None
