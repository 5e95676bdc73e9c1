"""The cache directory's eviction order in SQLite (proxy.store.diskorder): the same rules as
the fleet's in Redis (test_redisorder), and the marks a walk of the stores leaves.

Two connections to one file stand in for two processes: SQLite locks per connection. The
last test uses real processes, writing at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.model import Kind
from proxy.oci.digest import Digest
from proxy.store.diskorder import DiskOrder, member


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[tuple[DiskOrder, DiskOrder]]:
    path = tmp_path / "order.sqlite3"
    first, second = DiskOrder(path), DiskOrder(path)
    yield first, second
    await first.close()
    await second.close()


def blob(n: int) -> tuple[Kind, Digest]:
    return Kind.BLOB, Digest.of(f"layer {n}".encode())


async def test_a_blob_stored_by_two_processes_is_counted_once(
    processes: tuple[DiskOrder, DiskOrder],
) -> None:
    entries = [blob(n) for n in range(50)]
    for n, key in enumerate(entries):
        for order in processes:
            await order.stored({key: (1000 + n, 1.0)})
    expected = sum(1000 + n for n in range(50))
    assert await processes[1].total() == expected
    for n, key in enumerate(entries[:10]):
        await processes[n % 2].removed(key)
    await processes[0].removed(entries[0])  # removed twice: taken off once
    assert await processes[0].total() == expected - sum(1000 + n for n in range(10))
    assert await processes[1].size(entries[0]) is None
    assert await processes[1].size(entries[10]) == 1010


async def test_uses_keep_the_latest_and_only_of_what_is_stored(
    processes: tuple[DiskOrder, DiskOrder],
) -> None:
    first, second, never_stored = blob(1), blob(2), blob(3)
    await processes[0].stored({first: (10, 1.0), second: (20, 2.0)})
    await processes[1].used({first: 50.0, never_stored: 60.0})
    await processes[0].used({first: 40.0})  # an older batch, written late
    await processes[1].stored({second: (20, 3.0)})  # stored again: a later use, same size
    ranked = await processes[0].oldest(0, 10)
    assert [(r.key, r.size, r.last_used) for r in ranked] == [(second, 20, 3.0), (first, 10, 50.0)]
    assert await processes[1].coldest() == 3.0
    assert await processes[1].oldest(1, 10) == ranked[1:]
    assert await processes[0].total() == 30


async def test_a_walk_marks_what_it_found_and_pages_through_the_rest(
    processes: tuple[DiskOrder, DiskOrder],
) -> None:
    order = processes[0]
    entries = [blob(n) for n in range(25)]
    await order.stored({key: (1, float(n)) for n, key in enumerate(entries)})
    new = blob(99)
    assert await order.mark([*entries[:20], new], walk=7) == {new}
    missed, after = [], ""
    while page := await processes[1].unseen(7, 2, after):
        missed += page
        after = member(page[-1])
    assert sorted(missed, key=member) == sorted(entries[20:], key=member)
    assert await order.unseen(8, 100) != []  # a new walk has found nothing yet


async def test_the_generation_it_matched_is_kept(processes: tuple[DiskOrder, DiskOrder]) -> None:
    assert await processes[0].matched_generation() is None
    await processes[0].matched(3)
    assert await processes[1].matched_generation() == 3
    assert await processes[1].coldest() is None
    assert await processes[1].total() == 0


def _store_many(path: Path, start: int) -> None:
    async def run() -> None:
        order = DiskOrder(path)
        for n in range(start, start + 200):
            await order.stored({blob(n % 300): (1, float(n))})
        await order.close()

    asyncio.run(run())


def test_processes_writing_at_once_count_each_blob_once(tmp_path: Path) -> None:
    path = tmp_path / "order.sqlite3"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_store_many, args=(path, s)) for s in (0, 100)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    # 0..199 and 100..299: 300 blobs, each of size 1.
    assert asyncio.run(_total(path)) == 300


async def _total(path: Path) -> int:
    order = DiskOrder(path)
    try:
        return await order.total()
    finally:
        await order.close()
