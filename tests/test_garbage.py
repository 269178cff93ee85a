"""The cyclic garbage collector: what the service asks of it, and why it can ask so little.

A process runs its collections far apart (settings.gc_gen0_threshold, 50,000 by default
instead of Python's 700): with 700, the objects of the requests in flight at concurrency 32
set off a collection every ten-odd child creations, about 6 % of a worker's CPU, and each found
nothing to free. That is safe because the request path leaves no objects in reference cycles:
reference counting frees all of a request's objects when it ends. This checks both on a real
PostgreSQL, with child creations really in flight together (coalesced into groups).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from bench.inprocess import AsgiClient
from tests.support import TokenFactory, child_url, make_settings, started_app


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The collector's thresholds before the test, restored after it."""
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


async def test_the_lifespan_sets_the_first_generation_threshold(
    database_url: str, thresholds: tuple[int, int, int]
) -> None:
    gc.set_threshold(700, *thresholds[1:])
    async for _app in started_app(make_settings(database_url, gc_gen0_threshold=12_345)):
        assert gc.get_threshold() == (12_345, *thresholds[1:])
    gc.set_threshold(700, *thresholds[1:])
    async for _app in started_app(make_settings(database_url, gc_gen0_threshold=0)):
        assert gc.get_threshold() == (700, *thresholds[1:])  # 0: left as it was


async def _call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, bytes]:
    """One request as a server hands it to the app: a bare ASGI call (an HTTP client's own
    objects, some of them in cycles, would be counted with the app's)."""
    answer = await AsgiClient(app).request(method, path, body, headers)
    return answer.status_code, answer.content


def _cycles() -> Counter[str]:
    """The objects only the collector could free (in reference cycles), by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _round_of_requests(
    app: FastAPI, parents: list[str], auth: dict[str, str], creations: int
) -> list[tuple[int, bytes]]:
    """``creations`` plain children (coalesced: they are in flight together) and two reads."""
    requests = [
        _call(
            app,
            "POST",
            child_url(parents[i % len(parents)]),
            {**auth, "Idempotency-Key": uuid.uuid4().hex},
            {"subject": f"child {i}"},
        )
        for i in range(creations)
    ]
    requests.append(_call(app, "GET", f"/api/v2/conversations/{parents[0]}", auth))
    requests.append(_call(app, "GET", f"{child_url(parents[1])}?limit=5", auth))
    return list(await asyncio.gather(*requests))


async def test_requests_leave_no_reference_cycles(
    database_url: str, token_for: TokenFactory, thresholds: tuple[int, int, int]
) -> None:
    auth = {"Authorization": f"Bearer {token_for(f'ws_{uuid.uuid4().hex[:12]}')}"}
    settings = make_settings(database_url, idempotency_purge_interval_seconds=0)
    async for app in started_app(settings):
        parents = []
        for n in range(8):
            status, body = await _call(
                app, "POST", "/api/v2/conversations", auth, {"subject": f"p{n}"}
            )
            assert status == 201, body
            parents.append(orjson.loads(body)["id"])
        await _round_of_requests(app, parents, auth, 16)  # caches, pool, statements filled
        gc.collect()
        gc.disable()
        try:
            answers = []
            for _ in range(6):
                answers += await _round_of_requests(app, parents, auth, 16)
            cycles = _cycles()
        finally:
            gc.enable()
    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 6 * 16, statuses
    assert statuses.count(200) == 6 * 2, statuses
    # The same check notices a path that does leave cycles: a request answered through a
    # raised exception (its traceback refers to the frames that refer to it) leaves ~70
    # objects. Here: none per request (a handful for the whole test tolerated, none seen).
    assert sum(cycles.values()) < len(answers) / 10, cycles.most_common(10)
