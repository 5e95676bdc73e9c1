"""How many workers ``serve`` starts when the config does not say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.config import Config
from proxy.server.workers import worker_count

CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        (None, CPUS),  # no cgroup v2 file: the CPUs this process may run on
        ("max 100000\n", CPUS),
        ("100000 100000\n", 1),
        ("50000 100000\n", 1),  # half a CPU still needs a worker
        (f"{CPUS * 100000 + 1} 100000\n", CPUS),  # a quota above the CPUs at hand
    ],
)
def test_one_worker_per_cpu_within_the_cgroup_quota(
    tmp_path: Path, cpu_max: str | None, expected: int
) -> None:
    cgroup = tmp_path / "cpu.max"
    if cpu_max is not None:
        cgroup.write_text(cpu_max)
    assert worker_count(Config(), cgroup) == expected


def test_the_setting_wins(tmp_path: Path) -> None:
    cgroup = tmp_path / "cpu.max"
    cgroup.write_text("100000 100000\n")
    assert worker_count(Config(workers=7), cgroup) == 7


def test_a_replica_of_a_fleet_is_one_process_unless_told(tmp_path: Path) -> None:
    assert worker_count(Config(index_backend="redis"), tmp_path / "cpu.max") == 1
    assert worker_count(Config(index_backend="redis", workers=3), tmp_path / "cpu.max") == 3
