"""The benchmark's table with a fleet of replicas beside one regcache and direct."""

from __future__ import annotations

from bench import report
from bench.scenarios import PeerResult, Settings


def test_a_fleet_sits_after_regcache_and_is_compared_with_it_and_with_direct() -> None:
    order = report.peer_order(["direct", "regcache-x3", "regcache"])
    assert order == ["regcache", "regcache-x3", "direct"]
    rows = report.build_rows({p: PeerResult(p, p) for p in order}, Settings.short())
    header, _ = report.table_cells(rows, order)
    assert header[2:-1] == [*order, "rc/direct", "x3/rc", "x3/direct"]


def test_ratios_of_a_fleet_divide_its_figure_by_the_other_peers() -> None:
    row = report.Row("k", "label", "s", "lower", 2, {"regcache": 2.0, "regcache-x3": 3.0})
    assert row.ratio("regcache", "regcache-x3") == 1.5
    assert row.ratio("direct", "regcache-x3") is None
