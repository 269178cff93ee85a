"""``Turns.together`` on its own (no database): who runs alone, who goes together, in what
order and how many at once, where each outcome goes (a value, one request's exception, the
group's exception), and what a waiter that times out or is cancelled does to the others.

``run`` here is a fake that records the groups it gets and waits for the test to let it
finish; every test ends with no state left for its key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aurion.db.turns import Turns


class Runs:
    """A fake group runner: records each group, waits until ``release`` is set, answers each
    value ``v`` with ``("done", v)`` unless ``outcome`` says otherwise."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.release = asyncio.Event()
        self.raise_for_group: dict[int, BaseException] = {}  # group number (0-based) -> error
        self.item_errors: dict[Any, Exception] = {}  # value -> its own outcome, an error

    async def __call__(self, values: list[Any]) -> list[Any]:
        number = len(self.groups)
        self.groups.append(list(values))
        await self.release.wait()
        if number in self.raise_for_group:
            raise self.raise_for_group[number]
        return [self.item_errors.get(v, ("done", v)) for v in values]


async def settle() -> None:
    """Let every task that can run, run (queueing takes a few loop iterations)."""
    for _ in range(5):
        await asyncio.sleep(0)


def together(turns: Turns, runs: Runs, value: Any, key: str = "k") -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(turns.together(key, value, runs))


async def test_the_first_request_runs_at_once_alone() -> None:
    turns, runs = Turns(1.0), Runs()
    runs.release.set()
    assert await turns.together("k", 1, runs) == ("done", 1)
    assert runs.groups == [[1]]
    assert turns._keys == {}


async def test_requests_arriving_while_one_runs_go_next_together_in_arrival_order() -> None:
    turns, runs = Turns(5.0), Runs()
    first = together(turns, runs, 1)
    await settle()
    assert runs.groups == [[1]], "the first one is running, alone"
    rest = []
    for value in (2, 3, 4, 5, 6):
        rest.append(together(turns, runs, value))
        await settle()
    assert runs.groups == [[1]], "the others wait while it runs"
    runs.release.set()
    assert await first == ("done", 1)
    assert await asyncio.gather(*rest) == [("done", v) for v in (2, 3, 4, 5, 6)]
    assert runs.groups == [[1], [2, 3, 4, 5, 6]]
    assert turns._keys == {}


async def test_max_together_caps_a_group_and_the_rest_follow_in_order() -> None:
    turns, runs = Turns(5.0, max_together=3), Runs()
    tasks = [together(turns, runs, 1)]
    await settle()
    tasks += [together(turns, runs, v) for v in range(2, 10)]
    await settle()
    runs.release.set()
    assert await asyncio.gather(*tasks) == [("done", v) for v in range(1, 10)]
    assert runs.groups == [[1], [2, 3, 4], [5, 6, 7], [8, 9]]
    assert turns._keys == {}


async def test_keys_are_independent() -> None:
    turns, runs = Turns(5.0), Runs()
    a = together(turns, runs, "a1", key="a")
    await settle()
    b = together(turns, runs, "b1", key="b")
    await settle()
    assert runs.groups == [["a1"], ["b1"]], "another key's request does not wait for key a"
    runs.release.set()
    assert list(await asyncio.gather(a, b)) == [("done", "a1"), ("done", "b1")]
    assert turns._keys == {}


async def test_a_requests_own_exception_reaches_only_that_request() -> None:
    turns, runs = Turns(5.0), Runs()
    runs.item_errors = {3: ValueError("bad 3"), 5: KeyError("bad 5")}
    first = together(turns, runs, 1)
    await settle()
    rest = [together(turns, runs, v) for v in (2, 3, 4, 5)]
    await settle()
    runs.release.set()
    await first
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert runs.groups == [[1], [2, 3, 4, 5]]
    assert outcomes[0] == ("done", 2)
    assert isinstance(outcomes[1], ValueError)
    assert str(outcomes[1]) == "bad 3"
    assert outcomes[2] == ("done", 4)
    assert isinstance(outcomes[3], KeyError)
    assert turns._keys == {}


async def test_the_leaders_own_exception_reaches_only_the_leader() -> None:
    turns, runs = Turns(5.0), Runs()
    runs.item_errors = {2: ValueError("bad 2")}
    first = together(turns, runs, 1)
    await settle()
    rest = [together(turns, runs, v) for v in (2, 3)]
    await settle()
    runs.release.set()
    await first
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert runs.groups == [[1], [2, 3]], "2 leads its group"
    assert isinstance(outcomes[0], ValueError)
    assert outcomes[1] == ("done", 3)
    assert turns._keys == {}


async def test_an_exception_of_run_reaches_every_member_and_the_queue_goes_on() -> None:
    turns, runs = Turns(5.0), Runs()
    boom = RuntimeError("statement failed")
    runs.raise_for_group = {1: boom}
    first = together(turns, runs, 1)
    await settle()
    group = [together(turns, runs, v) for v in (2, 3, 4)]
    await settle()
    runs.release.set()
    assert await first == ("done", 1)
    outcomes = await asyncio.gather(*group, return_exceptions=True)
    assert outcomes == [boom, boom, boom]
    assert turns._keys == {}
    # The key is usable again.
    assert await turns.together("k", 5, runs) == ("done", 5)
    assert runs.groups == [[1], [2, 3, 4], [5]]
    assert turns._keys == {}


async def test_a_waiter_that_times_out_gets_timeout_error_and_is_not_run() -> None:
    # (A group that stalls lets the next one start: here it never does, so the waiter's own
    # timeout is what ends its wait.)
    turns, runs = Turns(0.05, stall_seconds=60), Runs()
    first = together(turns, runs, 1)
    await settle()
    late = together(turns, runs, 2)
    with pytest.raises(TimeoutError):
        await late
    assert list(turns._keys["k"].queue) == [], "it gave up its place"
    runs.release.set()
    assert await first == ("done", 1)
    assert runs.groups == [[1]], "the one that timed out never ran"
    assert turns._keys == {}


async def test_a_waiter_taken_into_a_group_before_its_timeout_gets_its_outcome() -> None:
    # 3 waits in the queue (timeout 0.2 s), is taken into the group [2, 3] at once, and that
    # group runs past 3's timeout: 3's outcome is on its way, so 3 gets it, not a timeout.
    turns, runs = Turns(0.2), Runs()
    first = together(turns, runs, 1)
    await settle()
    second, third = together(turns, runs, 2), together(turns, runs, 3)
    await settle()
    gate = runs.release
    slow_release = asyncio.Event()
    runs.release = slow_release  # the second group waits on this one
    gate.set()
    assert await first == ("done", 1)
    await settle()
    assert runs.groups == [[1], [2, 3]]
    await asyncio.sleep(0.3)  # past 3's timeout, inside the group's run
    assert not third.done()
    slow_release.set()
    assert list(await asyncio.gather(second, third)) == [("done", 2), ("done", 3)]
    assert turns._keys == {}


async def test_a_cancelled_waiter_leaves_the_queue_working_for_the_others() -> None:
    turns, runs = Turns(5.0), Runs()
    first = together(turns, runs, 1)
    await settle()
    waiting = [together(turns, runs, v) for v in (2, 3, 4)]
    await settle()
    waiting[1].cancel()
    await settle()
    assert waiting[1].cancelled()
    runs.release.set()
    assert await first == ("done", 1)
    assert list(await asyncio.gather(waiting[0], waiting[2])) == [("done", 2), ("done", 4)]
    assert runs.groups == [[1], [2, 4]], "the cancelled one was left out"
    assert turns._keys == {}


async def test_a_cancelled_first_waiter_leaves_the_next_one_to_lead() -> None:
    turns, runs = Turns(5.0), Runs()
    first = together(turns, runs, 1)
    await settle()
    waiting = [together(turns, runs, v) for v in (2, 3)]
    await settle()
    waiting[0].cancel()
    await settle()
    runs.release.set()
    assert await first == ("done", 1)
    assert await waiting[1] == ("done", 3)
    assert runs.groups == [[1], [3]]
    assert turns._keys == {}


async def test_a_waiter_cancelled_when_chosen_to_lead_still_runs_its_group() -> None:
    # The first group's run ends by arranging 2's cancellation for the moment just after 2
    # is chosen to lead [2, 3] (hand-over happens as the run returns, before 2 resumes).
    turns = Turns(5.0)
    runs = Runs()
    runs.release.set()
    tasks: dict[int, asyncio.Task[Any]] = {}

    async def run(values: list[Any]) -> list[Any]:
        if values == [1]:
            await hold.wait()
            asyncio.get_running_loop().call_soon(tasks[2].cancel)
        return await runs(values)

    hold = asyncio.Event()
    tasks[1] = asyncio.get_running_loop().create_task(turns.together("k", 1, run))
    await settle()
    for v in (2, 3):
        tasks[v] = asyncio.get_running_loop().create_task(turns.together("k", v, run))
    await settle()
    hold.set()
    assert await tasks[1] == ("done", 1)
    assert await tasks[3] == ("done", 3), "the group of the cancelled leader still ran"
    with pytest.raises(asyncio.CancelledError):
        await tasks[2]
    await settle()
    assert runs.groups == [[1], [2, 3]]
    assert turns._keys == {}


async def test_a_leader_cancelled_while_running_leaves_its_group_to_finish() -> None:
    # The group's statement runs to its end even if its leader's request goes away: the others
    # get their true outcomes (a write that committed is never reported as a failure).
    turns, runs = Turns(5.0, stall_seconds=60), Runs()
    first = together(turns, runs, 1)
    await settle()
    group = [together(turns, runs, v) for v in (2, 3)]
    await settle()
    hold = asyncio.Event()
    # Let the first run end; the second group ([2, 3]) then blocks on ``hold``.
    gate = runs.release
    runs.release = hold
    gate.set()
    assert await first == ("done", 1)
    await settle()
    assert runs.groups == [[1], [2, 3]]
    later = together(turns, runs, 4)
    await settle()
    group[0].cancel()
    await settle()
    assert group[0].cancelled()
    assert not group[1].done(), "its group is still running"
    hold.set()
    assert await group[1] == ("done", 3)
    assert await later == ("done", 4), "the next group still runs"
    assert runs.groups == [[1], [2, 3], [4]]
    assert turns._keys == {}
    assert turns._running == set()


async def test_a_stalled_group_lets_the_next_one_start() -> None:
    # A group still running after stall_seconds (waiting on a lock, say) hands over: the key's
    # other requests do not wait for it; it still answers its own when it ends.
    turns, runs = Turns(5.0, stall_seconds=0.05), Runs()
    stuck = asyncio.Event()

    async def run(values: list[Any]) -> list[Any]:
        runs.groups.append(list(values))
        if 1 in values:
            await stuck.wait()
        return [("done", v) for v in values]

    first = asyncio.get_running_loop().create_task(turns.together("k", 1, run))
    await settle()
    behind = [asyncio.get_running_loop().create_task(turns.together("k", v, run)) for v in (2, 3)]
    await settle()
    assert runs.groups == [[1]]
    done, _ = await asyncio.wait(behind, timeout=2)
    assert [t.result() for t in behind] == [("done", 2), ("done", 3)]
    assert not first.done()
    stuck.set()
    assert await first == ("done", 1)
    assert runs.groups == [[1], [2, 3]]
    assert turns._keys == {}


async def test_turn_state_is_cleaned_up_too() -> None:
    turns = Turns(5.0)
    order: list[int] = []

    async def one(n: int) -> None:
        async with turns.turn("p"):
            order.append(n)
            await asyncio.sleep(0)

    await asyncio.gather(*(one(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert turns._locks == {}


class Gates:
    """A fake group runner whose groups each wait for their own release (by group number)."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, values: list[Any]) -> list[Any]:
        gate = asyncio.Event()
        self.groups.append(list(values))
        self.gates.append(gate)
        await gate.wait()
        return [("done", v) for v in values]

    def release(self, number: int) -> None:
        self.gates[number].set()


def start(turns: Turns, run: Gates, value: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(turns.together("k", value, run))


async def test_with_two_lanes_a_second_group_runs_beside_the_first() -> None:
    turns, run = Turns(5.0, lanes=2), Gates()
    first = start(turns, run, 1)
    await settle()
    second = start(turns, run, 2)  # as many joined (itself) as the running group has: it goes
    await settle()
    assert run.groups == [[1], [2]]
    third = start(turns, run, 3)
    await settle()
    assert run.groups == [[1], [2]], "both lanes are taken: the third waits"
    run.release(1)
    assert await second == ("done", 2)
    await settle()
    assert run.groups == [[1], [2], [3]], "a lane is free: it goes"
    run.release(0)
    run.release(2)
    assert [await first, await third] == [("done", 1), ("done", 3)]
    assert turns._keys == {}


async def running_four(turns: Turns, run: Gates) -> list[asyncio.Task[Any]]:
    """Leave one group of four running (group 2: [3, 4, 5, 6]) and no other."""
    tasks = [start(turns, run, 1)]
    await settle()
    tasks.append(start(turns, run, 2))  # the second lane, beside [1]
    await settle()
    tasks += [start(turns, run, v) for v in (3, 4, 5, 6)]  # both lanes taken: they wait
    await settle()
    run.release(0)  # a lane is free: [3, 4, 5, 6] goes beside [2]
    await settle()
    run.release(1)
    await settle()
    assert run.groups == [[1], [2], [3, 4, 5, 6]]
    return tasks


async def test_a_group_beside_a_running_one_waits_until_it_is_as_large() -> None:
    # The next requests arrive one by one. The one that leads them waits until four have
    # joined (not alone right away): the groups in flight stay of a size.
    turns, run = Turns(5.0, lanes=2), Gates()
    tasks = await running_four(turns, run)
    for v in (7, 8, 9):
        tasks.append(start(turns, run, v))
        await settle()
        assert len(run.groups) == 3, "fewer have joined than the running group has: it waits"
    tasks.append(start(turns, run, 10))
    await settle()
    assert run.groups[3] == [7, 8, 9, 10]
    run.release(2)
    run.release(3)
    assert [await t for t in tasks] == [("done", v) for v in range(1, 11)]
    assert turns._keys == {}


async def test_a_forming_group_goes_with_what_it_has_when_the_running_one_ends() -> None:
    turns, run = Turns(5.0, lanes=2), Gates()
    tasks = await running_four(turns, run)
    tasks.append(start(turns, run, 7))  # waits for company (four would match the running one)
    await settle()
    assert len(run.groups) == 3
    run.release(2)  # the running group ends: the database would be idle, so 7 goes now
    await settle()
    assert run.groups[3] == [7]
    run.release(3)
    assert [await t for t in tasks] == [("done", v) for v in range(1, 8)]
    assert turns._keys == {}


async def test_a_forming_group_goes_after_stall_seconds_at_the_latest() -> None:
    turns, run = Turns(5.0, lanes=2, stall_seconds=0.3), Gates()
    tasks = await running_four(turns, run)
    lone = start(turns, run, 7)
    done, _ = await asyncio.wait([lone], timeout=0.01)
    assert not done, "it waits for company"
    assert len(run.groups) == 3
    await asyncio.sleep(0.6)
    # [3, 4, 5, 6] stalled (still running after 0.3 s): 7 did not wait for it any longer.
    assert run.groups[3] == [7]
    run.release(3)
    assert await lone == ("done", 7)
    run.release(2)
    assert [await t for t in tasks] == [("done", v) for v in range(1, 7)]
    assert turns._keys == {}


async def test_a_leader_cancelled_while_forming_leaves_the_others_to_go() -> None:
    turns, run = Turns(5.0, lanes=2), Gates()
    tasks = await running_four(turns, run)
    leader = start(turns, run, 7)
    await settle()
    follower = start(turns, run, 8)
    await settle()
    leader.cancel()
    await settle()
    assert len(run.groups) == 3
    run.release(2)  # the running group ends: the follower, left waiting, now leads
    await settle()
    assert run.groups[3] == [8]
    run.release(3)
    assert await follower == ("done", 8)
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert [await t for t in tasks] == [("done", v) for v in range(1, 7)]
    assert turns._keys == {}
