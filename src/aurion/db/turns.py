"""Turns per row within one process: requests on one busy row wait here, in arrival order.

Every request that changes a parent conversation locks its row until it commits, and a commit
wakes every backend waiting on that row; a burst of children under one ticket would keep up to
a pool's worth of backends per process queued on it, each woken and put back to sleep at every
commit. Taking turns in the process first leaves at most one backend per process waiting on the
row; correctness still comes from the row lock (across processes and hosts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Turns:
    """Waiting for a turn is bounded like a lock wait in the database (``lock_timeout``): past
    it, ``TimeoutError``, which the error handlers answer with 503 and Retry-After."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

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
