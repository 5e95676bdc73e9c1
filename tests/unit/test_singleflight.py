"""SingleFlight: one call per key in flight, shared by every concurrent caller.

No test waits for time to pass: calls block on events the test releases, and
``let_tasks_run`` only yields to the event loop so that tasks just created take their
first step (which is where they join a flight).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.singleflight import SingleFlight


class Call:
    """A call that runs until released, recording what happened to it."""

    def __init__(self, result: object = "value", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.starts = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.done = asyncio.Event()
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None

    async def __call__(self) -> object:
        self.starts += 1
        self.task = asyncio.current_task()
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.done.set()
        if self.error is not None:
            raise self.error
        return self.result


def must_not_run() -> Any:
    raise AssertionError("a caller that joins must not start its own call")


async def let_tasks_run() -> None:
    """Yield so that tasks created so far run up to their first await."""
    for _ in range(3):
        await asyncio.sleep(0)


async def start(
    flight: SingleFlight[Any], call: Call, followers: int = 0
) -> list[asyncio.Task[Any]]:
    """A leader that starts ``call`` under key "k", then followers that join it."""
    leader = asyncio.create_task(flight.do("k", call))
    await call.started.wait()
    tasks = [leader]
    tasks += [asyncio.create_task(flight.do("k", must_not_run)) for _ in range(followers)]
    await let_tasks_run()
    return tasks


async def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    call = Call(result=object())
    tasks = await start(flight, call, followers=4)
    assert len(flight) == 1
    call.release.set()
    results = await asyncio.gather(*tasks)
    assert call.starts == 1
    assert [joined for _, joined in results] == [False, True, True, True, True]
    assert all(value is call.result for value, _ in results)
    assert len(flight) == 0


async def test_distinct_keys_run_separately() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    first, second = Call("one"), Call("two")
    tasks = [
        asyncio.create_task(flight.do("a", first)),
        asyncio.create_task(flight.do("b", second)),
    ]
    await first.started.wait()
    await second.started.wait()
    assert len(flight) == 2
    first.release.set()
    second.release.set()
    assert await asyncio.gather(*tasks) == [("one", False), ("two", False)]


async def test_a_finished_call_is_not_reused() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    first, second = Call("old"), Call("new")
    first.release.set()
    second.release.set()
    assert await flight.do("k", first) == ("old", False)
    assert await flight.do("k", second) == ("new", False)
    assert (first.starts, second.starts) == (1, 1)


@pytest.mark.parametrize("cancelled", [[0], [1], [0, 2], [1, 2]])
async def test_a_cancelled_caller_does_not_cancel_the_shared_call(cancelled: list[int]) -> None:
    flight: SingleFlight[Any] = SingleFlight()
    call = Call()
    tasks = await start(flight, call, followers=2)
    for index in cancelled:
        tasks[index].cancel()
    await let_tasks_run()
    call.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert not call.cancelled
    assert call.starts == 1
    for index, outcome in enumerate(outcomes):
        if index in cancelled:
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert outcome == ("value", index != 0)


async def test_the_call_outlives_all_its_callers() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    call = Call()
    tasks = await start(flight, call, followers=2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(task.cancelled() for task in tasks)
    # Still in flight: a new caller joins it rather than starting over.
    late = asyncio.create_task(flight.do("k", must_not_run))
    await let_tasks_run()
    call.release.set()
    assert await late == ("value", True)
    assert not call.cancelled
    assert call.starts == 1


async def test_an_exception_reaches_every_caller_and_the_next_call_runs_afresh() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    error = ValueError("upstream broke")
    call = Call(error=error)
    tasks = await start(flight, call, followers=3)
    call.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(outcome is error for outcome in outcomes)
    assert call.starts == 1
    assert len(flight) == 0

    retry = Call("recovered")
    retry.release.set()
    assert await flight.do("k", retry) == ("recovered", False)
    assert retry.starts == 1


async def test_a_failure_nobody_waits_for_is_not_reported_as_lost() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        flight: SingleFlight[Any] = SingleFlight()
        call = Call(error=ValueError("nobody listens"))
        tasks = await start(flight, call, followers=1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        call.release.set()
        await call.done.wait()
        await let_tasks_run()
        assert len(flight) == 0
        del tasks
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(previous)


async def test_a_cancelled_call_cancels_its_callers_and_is_forgotten() -> None:
    flight: SingleFlight[Any] = SingleFlight()
    call = Call()
    tasks = await start(flight, call, followers=1)
    # Cancel the shared call itself (as at shutdown): every caller sees the cancellation.
    assert call.task is not None
    call.task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert call.cancelled
    await let_tasks_run()
    assert len(flight) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=20))
def test_one_call_per_key_whatever_the_mix(keys: list[str]) -> None:
    async def scenario() -> None:
        flight: SingleFlight[tuple[str, int]] = SingleFlight()
        release = asyncio.Event()
        starts: Counter[str] = Counter()

        def call_for(key: str) -> Any:
            async def call() -> tuple[str, int]:
                starts[key] += 1
                await release.wait()
                return key, starts[key]

            return call

        tasks = [asyncio.create_task(flight.do(key, call_for(key))) for key in keys]
        await let_tasks_run()
        assert len(flight) == len(set(keys))
        release.set()
        results = await asyncio.gather(*tasks)
        assert starts == Counter(set(keys))
        for key, ((result_key, number), _) in zip(keys, results, strict=True):
            assert (result_key, number) == (key, 1)
        leaders = Counter(key for key, (_, joined) in zip(keys, results, strict=True) if not joined)
        assert leaders == Counter(set(keys))
        assert len(flight) == 0

    asyncio.run(scenario())
