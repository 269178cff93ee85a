"""Turns per row within one process: requests on one busy row wait here, in arrival order.

Every request that changes a parent conversation locks its row until it commits, and a commit
wakes every backend waiting on that row; a burst of children under one ticket would keep up to
a pool's worth of backends per process queued on it, each woken and put back to sleep at every
commit. Taking turns in the process first leaves at most one backend per process waiting on the
row; correctness still comes from the row lock (across processes and hosts).

``together`` goes further for requests that can share a statement: those that arrive while one
runs wait, and then go together, as one group (one statement, one commit, one wait for the row
lock) that answers each of them. A request that finds no one ahead goes at once, alone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

# One group's requests and what each gets: its result, or the exception it raises.
Group = Callable[[list[Any]], Coroutine[Any, Any, list[Any]]]


@dataclass(eq=False, slots=True)
class _Waiting:
    value: Any
    # Resolved with _LEAD (run the next group, self first) or the request's outcome.
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False, slots=True)
class _Key:
    """The requests of one key: those waiting, and the groups running (or forming) now."""

    queue: deque[_Waiting] = field(default_factory=deque)
    running: int = 0  # lanes taken: groups running or forming
    # The sizes of the groups running now (a stalled group no longer counts).
    sizes: list[int] = field(default_factory=list)
    # A leader is gathering its group: those arriving meanwhile join it, and it is told
    # (``changed``) when one arrives or a group ends.
    forming: bool = False
    changed: asyncio.Future[None] | None = None

    def notify(self) -> None:
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)


class _Lead:
    """What a waiting request is told when its group is next and it runs it."""


_LEAD = _Lead()


class Turns:
    """Waiting for a turn is bounded like a lock wait in the database (``lock_timeout``): past
    it, ``TimeoutError``, which the error handlers answer with 503 and Retry-After."""

    def __init__(
        self,
        timeout_seconds: float,
        *,
        max_together: int = 32,
        lanes: int = 1,
        stall_seconds: float | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_together = max_together
        # Groups of one key that may run at once. With two, the process is not idle while a
        # group is in the database: the requests answered by the other are parsed, and form
        # the next group, meanwhile (with one, the process and the statement take turns).
        self._lanes = lanes
        # A statement of a group takes milliseconds; one still running after this is waiting
        # (on a lock): the next group starts meanwhile. Default: a tenth of the timeout, at
        # most 0.1 s.
        self._stall = min(0.1, timeout_seconds / 10) if stall_seconds is None else stall_seconds
        self._running: set[asyncio.Task[Any]] = set()
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._keys: dict[Hashable, _Key] = {}

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Run the block when the requests before this one on ``key`` (here) are done."""
        lock, holders = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, holders + 1)
        try:
            if holders == 0:
                # Nobody else here: a new lock, taken at once. No timer to set and cancel
                # (asyncio.timeout costs more than the rest of a turn, profiled).
                await lock.acquire()
            else:
                async with asyncio.timeout(self._timeout):
                    await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, holders = self._locks[key]
            if holders == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, holders - 1)

    async def together(self, key: Hashable, value: Any, run: Group) -> Any:
        """``value``'s outcome from ``run``, which gets the values of one group of requests on
        ``key`` (in arrival order, at most ``max_together``) and returns each one's result or
        exception, in the same order. At most ``lanes`` groups of a key run at once; those
        arriving meanwhile wait and form the next group. A group still running after
        ``stall_seconds`` (waiting on a lock, say) frees its lane: one stuck group does not
        hold up the key's other requests."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        if state.running < self._lanes and not state.forming and not state.queue:
            state.running += 1  # a free lane: lead at once (no timer, no future)
            return await self._lead(key, state, value, run)
        waiting = _Waiting(value)
        state.queue.append(waiting)
        state.notify()
        outcome = await self._wait(key, state, waiting, run)
        if outcome is _LEAD:
            return await self._lead(key, state, value, run)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _wait(self, key: Hashable, state: _Key, waiting: _Waiting, run: Group) -> Any:
        # One timer handle, not asyncio.timeout + shield (a scope, a task and a future more per
        # waiting request: about 5 µs of CPU, measured). It only ends a wait that is still in
        # the queue: one taken into a group meanwhile gets its outcome from the group.
        timer = asyncio.get_running_loop().call_later(
            self._timeout, self._expire, key, state, waiting
        )
        try:
            return await waiting.future
        except asyncio.CancelledError:
            if waiting in state.queue:
                state.queue.remove(waiting)
                self._forget_if_idle(key, state)
            elif (
                not waiting.future.cancelled()
                and waiting.future.done()
                and waiting.future.result() is _LEAD
            ):
                # Chosen to lead, but cancelled: its group still runs, and the queue goes on.
                self._keep(asyncio.get_running_loop().create_task(
                    self._lead(key, state, waiting.value, run)
                ))  # fmt: skip
            raise
        finally:
            timer.cancel()

    def _expire(self, key: Hashable, state: _Key, waiting: _Waiting) -> None:
        """The wait timed out: give up the place if it was never taken into a group."""
        if waiting in state.queue and not waiting.future.done():
            state.queue.remove(waiting)
            self._forget_if_idle(key, state)
            waiting.future.set_exception(TimeoutError())

    async def _lead(self, key: Hashable, state: _Key, value: Any, run: Group) -> Any:
        """Run the group of this request and those waiting now (as many as fit, in order),
        answer the others, and free the lane for the next one waiting. Holds a lane."""
        handed = False
        size = 0

        def hand_over() -> None:
            nonlocal handed
            if not handed:
                handed = True
                state.running -= 1
                if size:
                    state.sizes.remove(size)
                    state.notify()
                self._wake(key, state)

        try:
            await self._gather(state)
        except BaseException:
            hand_over()
            raise
        others: list[_Waiting] = []
        while state.queue and len(others) < self._max_together - 1:
            waiting = state.queue.popleft()
            if not waiting.future.done():
                others.append(waiting)
        size = len(others) + 1
        state.sizes.append(size)
        if state.queue:  # more than fit: the next group may start in a free lane
            self._wake(key, state)
        loop = asyncio.get_running_loop()
        stalled = loop.call_later(self._stall, hand_over)
        if not others:  # alone: cancelled with its request, like any statement
            try:
                outcomes = await run([value])
            finally:
                stalled.cancel()
                hand_over()
            return _own(outcomes[0])
        # A group: its statement runs to its end even if this request goes away, so that the
        # others get their true outcomes (not a failure for a write that committed).
        group = loop.create_task(run([value, *(w.value for w in others)]))

        def answer(done: asyncio.Task[list[Any]]) -> None:
            stalled.cancel()
            outcomes: list[Any]
            if done.cancelled():
                outcomes = [TimeoutError("the group's statement was cancelled")] * len(others)
            elif (error := done.exception()) is not None:
                outcomes = [error] * len(others)
            elif len(result := done.result()) != len(others) + 1:
                outcomes = [RuntimeError("a group's outcomes do not match it")] * len(others)
            else:
                outcomes = result[1:]
            for w, outcome in zip(others, outcomes, strict=True):
                if not w.future.done():
                    w.future.set_result(outcome)
            hand_over()

        group.add_done_callback(answer)
        self._keep(group)
        return _own((await asyncio.shield(group))[0])

    async def _gather(self, state: _Key) -> None:
        """While another group of the key runs, wait until as many have joined as it has
        (or it ends, or ``stall_seconds`` pass): the groups in flight stay of a size, each
        about half of the requests. Going at once would start a small group after every
        large one, and the two would alternate: the process busy while the database waits
        for it, then the other way round."""
        if state.forming or not state.sizes:
            return
        state.forming = True
        loop = asyncio.get_running_loop()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            state.notify()

        # One timer for the whole wait, not a timeout scope per arrival.
        timer = loop.call_later(self._stall, expire)
        try:
            while state.sizes and len(state.queue) + 1 < min(max(state.sizes), self._max_together):
                if expired:
                    break
                state.changed = loop.create_future()
                await state.changed
        finally:
            timer.cancel()
            state.forming = False
            state.changed = None

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a task that nobody awaits until it ends (the loop keeps only a weak one)."""
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _wake(self, key: Hashable, state: _Key) -> None:
        """A lane is free: wake the first one waiting on ``key`` to lead the next group (it
        takes the others waiting when it starts: those that came meanwhile too); or forget
        the key."""
        if state.running < self._lanes and not state.forming:
            while state.queue:
                waiting = state.queue.popleft()
                if not waiting.future.done():
                    state.running += 1
                    waiting.future.set_result(_LEAD)
                    return
        self._forget_if_idle(key, state)

    def _forget_if_idle(self, key: Hashable, state: _Key) -> None:
        if state.running == 0 and not state.queue and self._keys.get(key) is state:
            del self._keys[key]


def _own(outcome: Any) -> Any:
    """A request's outcome: its result, or its exception raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
