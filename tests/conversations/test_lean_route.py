"""LeanRoute (aurion/routing.py) answers exactly as FastAPI's own APIRoute handler does.

The same script of requests on the five hot routes (valid ones, replays, every refusal, malformed
parameters, headers and bodies, several errors at once) runs against two apps on one database:
one with LeanRoute's fast path, one with FastAPI's handler only (``LeanRoute.lean = False`` while
its handlers are built). Each run has a workspace of its own, so both see the same state; the
transcripts (status, headers but the request id, body bytes) must be identical once ids, times
and the workspace are replaced by placeholders in order of appearance.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.utils import solve_dependencies

from aurion.auth.principal import READ, WRITE, Principal
from aurion.auth.tokens import mint_token
from aurion.conversations.router import router
from aurion.errors import InsufficientScope
from aurion.routing import LeanRoute, _fits
from aurion.settings import Settings
from tests.support import asgi_client, assert_unavailable, make_settings, started_app

BASE = "/api/v2/conversations"
MISSING = "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70"  # no conversation has this id
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_CURSOR = re.compile(r'"next_cursor":"[A-Za-z0-9_-]{22}"')


class Spy:
    """Counts FastAPI's dependency solving: every request its handler serves goes through it."""

    def __init__(self) -> None:
        self.calls = 0
        self.original = solve_dependencies

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.original(**kwargs)


@pytest.fixture(scope="module")
def lean_settings(database_url: str) -> Settings:
    # A small limit and body cap, so that children_limit_reached and 413 are cheap to reach.
    return make_settings(database_url, max_children_per_parent=5, max_body_bytes=64 * 1024)


async def _app(settings: Settings, lean: bool) -> AsyncIterator[FastAPI]:
    async for app in started_app(settings):
        # FastAPI builds an included route's handler on the app's first request: the flag is
        # read then.
        saved = LeanRoute.lean
        LeanRoute.lean = lean
        try:
            async with asgi_client(app) as c:
                assert (await c.get(f"{BASE}/{MISSING}")).status_code == 401
        finally:
            LeanRoute.lean = saved
        yield app


@pytest.fixture(scope="module")
async def lean_app(lean_settings: Settings) -> AsyncIterator[FastAPI]:
    async for app in _app(lean_settings, lean=True):
        yield app


@pytest.fixture(scope="module")
async def normal_app(lean_settings: Settings) -> AsyncIterator[FastAPI]:
    async for app in _app(lean_settings, lean=False):
        yield app


Transcript = list[tuple[str, int, list[tuple[str, str]], bytes]]


async def _script(client: httpx.AsyncClient, settings: Settings) -> Transcript:
    """Every kind of request to the hot routes, in one workspace of its own."""
    workspace = f"ws_{uuid.uuid4().hex[:12]}"

    def token(scopes: str, ws: str = workspace) -> dict[str, str]:
        jwt = mint_token(settings, workspace=ws, subject="agent-1", scopes=scopes)
        return {"Authorization": f"Bearer {jwt}"}

    rw, ro, wo = token(f"{READ} {WRITE}"), token(READ), token(WRITE)
    stranger = token(f"{READ} {WRITE}", f"ws_{uuid.uuid4().hex[:12]}")
    transcript: Transcript = []

    async def send(label: str, method: str, url: str, **options: Any) -> httpx.Response:
        response = await client.request(method, url, **options)
        if method != "HEAD":
            length = response.headers.get("content-length", len(response.content))
            assert int(length) == len(response.content)
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name not in ("x-request-id", "content-length")
        ]
        transcript.append((label, response.status_code, headers, response.content))
        return response

    def raw(body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
        headers = dict(rw)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return {"content": body, "headers": headers}

    # --- createConversation
    first = {
        "subject": "Parent",
        "priority": "high",
        "tags": ["a"],
        "messages": [{"body": "hello"}, {"body": "note", "is_internal": True}],
    }
    created = await send(
        "create", "POST", BASE, json=first, headers={**rw, "Idempotency-Key": "k-parent"}
    )
    parent = created.json()["id"]
    message = created.json()["messages"][0]["id"]
    await send(
        "create replay", "POST", BASE, json=first, headers={**rw, "Idempotency-Key": "k-parent"}
    )
    await send(
        "create key reused",
        "POST",
        BASE,
        json={"subject": "Other"},
        headers={**rw, "Idempotency-Key": "k-parent"},
    )
    await send("create no key", "POST", BASE, json={"subject": "Plain"}, headers=rw)
    bad_bodies: list[tuple[str, bytes, str | None]] = [
        ("empty", b"", "application/json"),
        ("missing subject", b"{}", "application/json"),
        (
            "several errors",
            json.dumps(
                {"subject": "", "priority": "nope", "status": 1, "messages": [{"body": 5}, {}]}
            ).encode(),
            "application/json",
        ),
        ("unknown field", b'{"subject": "x", "nope": 1}', "application/json"),
        ("truncated", b'{"subject":', "application/json"),
        ("array", b"[]", "application/json"),
        ("null", b"null", "application/json"),
        ("string", b'"x"', "application/json"),
        ("not utf-8", b'{"subject": "\xff"}', "application/json"),
        ("too deep", b"[" * 100_000, "application/json"),
        ("long int", b'{"subject": "x", "planned_effort_minutes": ' + b"9" * 5000 + b"}", None),
        ("text/plain", b'{"subject": "x"}', "text/plain"),
        ("no content type", b'{"subject": "x"}', None),
        ("charset", b'{"subject": "x"}', "application/json; charset=utf-8"),
        ("+json", b'{"subject": "x"}', "application/vnd.aurion+json"),
        ("upper case", b'{"subject": "x"}', "Application/JSON"),
    ]
    for label, body, content_type in bad_bodies:
        await send(f"create {label}", "POST", BASE, **raw(body, content_type))
    # Bodies the fast path validates straight from the bytes (pydantic-core's JSON parser),
    # where FastAPI parses with the json module first: the same answer, accepted or not.
    parsed_bodies: list[tuple[str, bytes]] = [
        ("duplicate key", b'{"subject": "first", "subject": "last"}'),
        ("escapes", b'{"subject": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\/ \\t"}'),
        ("lone surrogate", b'{"subject": "x \\ud800 y"}'),
        ("nul", b'{"subject": "x \\u0000 y"}'),
        (
            "numbers",
            b'{"subject": "n", "custom_attrs": {"a": 1.0, "b": -0.0, "c": 1E2, "d": 1234567890'
            b'1234567890123, "e": 0.1, "f": 1.5e-7, "g": [true, null, {}]},'
            b' "planned_effort_minutes": 5}',
        ),
        ("float minutes", b'{"subject": "n", "planned_effort_minutes": 5.0}'),
        ("NaN", b'{"subject": "n", "custom_attrs": {"a": NaN}}'),
        ("Infinity", b'{"subject": "n", "custom_attrs": {"a": Infinity}}'),
        ("huge float", b'{"subject": "n", "custom_attrs": {"a": 1e400}}'),
        ("whitespace", b' \n\t{ "subject" :\r\n"w" }  \n'),
        ("BOM", b'\xef\xbb\xbf{"subject": "bom"}'),
        ("trailing garbage", b'{"subject": "x"} x'),
        ("two documents", b'{"subject": "x"}{"subject": "y"}'),
        ("tags", b'{"subject": "t", "tags": ["b", "a", "b"]}'),
    ]
    for label, body in parsed_bodies:
        await send(f"create {label}", "POST", BASE, **raw(body))
    await send(
        "create bad key and body",
        "POST",
        BASE,
        json={"subject": 1},
        headers={**rw, "Idempotency-Key": "x" * 256},
    )
    await send(
        "create empty key",
        "POST",
        BASE,
        json={"subject": "k"},
        headers={**rw, "Idempotency-Key": ""},
    )
    await send("create no auth, bad body", "POST", BASE, json={"subject": 1})
    await send("create no auth", "POST", BASE, json={"subject": "x"})
    await send(
        "create bad token",
        "POST",
        BASE,
        json={"subject": "x"},
        headers={"Authorization": "Bearer not.a.jwt"},
    )
    await send(
        "create basic", "POST", BASE, json={"subject": "x"}, headers={"Authorization": "Basic eA=="}
    )
    await send("create read-only", "POST", BASE, json={"subject": "x"}, headers=ro)
    await send("create read-only, bad body", "POST", BASE, json={"subject": 1}, headers=ro)
    await send("create too large", "POST", BASE, **raw(b" " * (65 * 1024) + b"{}"))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 4096

    await send("create too large, streamed", "POST", BASE, content=chunks(), headers=rw)

    # --- createChildConversation
    children = f"{BASE}/{parent}/children"
    child_body = {"subject": "Child", "copy_message_ids": [message], "message": {"body": "split"}}
    child = await send(
        "child", "POST", children, json=child_body, headers={**rw, "Idempotency-Key": "k-child"}
    )
    child_id = child.json()["id"]
    await send(
        "child replay",
        "POST",
        children,
        json=child_body,
        headers={**rw, "Idempotency-Key": "k-child"},
    )
    await send(
        "child key reused",
        "POST",
        children,
        json={"subject": "Other"},
        headers={**rw, "Idempotency-Key": "k-child"},
    )
    await send(
        "child stale If-Match",
        "POST",
        children,
        json={"subject": "c"},
        headers={**rw, "If-Match": '"1"'},
    )
    await send(
        "child weak If-Match",
        "POST",
        children,
        json={"subject": "c"},
        headers={**rw, "If-Match": 'W/"2"'},
    )
    await send(
        "child If-Match", "POST", children, json={"subject": "c"}, headers={**rw, "If-Match": '"2"'}
    )
    await send(
        "child If-Match *", "POST", children, json={"subject": "c"}, headers={**rw, "If-Match": "*"}
    )
    await send(
        "child If-Match too long, bad body",
        "POST",
        children,
        json={"subject": None, "priority": 3},
        headers={**rw, "If-Match": '"' + "1" * 1030 + '"'},
    )
    await send(
        "child bad id, key, body",
        "POST",
        f"{BASE}/not-a-uuid/children",
        json={"copy_message_ids": ["x", "x"], "message": {}},
        headers={**rw, "Idempotency-Key": "\x7f"},
    )
    await send(
        "child missing parent",
        "POST",
        f"{BASE}/{MISSING}/children",
        json={"subject": "c"},
        headers=rw,
    )
    await send("child other workspace", "POST", children, json={"subject": "c"}, headers=stranger)
    await send(
        "child of a child", "POST", f"{BASE}/{child_id}/children", json={"subject": "c"}, headers=rw
    )
    await send(
        "child foreign message",
        "POST",
        children,
        json={"subject": "c", "copy_message_ids": [MISSING]},
        headers=rw,
    )
    await send(
        "child duplicate copies",
        "POST",
        children,
        json={"subject": "c", "copy_message_ids": [message, message]},
        headers=rw,
    )
    await send("child read-only", "POST", children, json={"subject": "c"}, headers=ro)
    await send("child no auth, bad id", "POST", f"{BASE}/nope/children", json={"subject": 1})
    await send("child form body", "POST", children, data={"subject": "c"}, headers=rw)
    await send("child limit", "POST", children, json={"subject": "c"}, headers=rw)
    await send("child limit reached", "POST", children, json={"subject": "c"}, headers=rw)

    # --- createChildConversationsBatch
    other = (
        await send("create other parent", "POST", BASE, json={"subject": "P2"}, headers=rw)
    ).json()
    batch = f"{BASE}/{other['id']}/children/batch"
    two = {"children": [{"subject": "b1"}, {"subject": "b2", "priority": "urgent"}]}
    await send("batch", "POST", batch, json=two, headers={**rw, "Idempotency-Key": "k-batch"})
    await send(
        "batch replay", "POST", batch, json=two, headers={**rw, "Idempotency-Key": "k-batch"}
    )
    await send("batch empty", "POST", batch, json={"children": []}, headers=rw)
    await send("batch 51", "POST", batch, json={"children": [{"subject": "b"}] * 51}, headers=rw)
    await send(
        "batch bad items",
        "POST",
        batch,
        json={"children": [{"subject": "ok"}, {"subject": 2}, {"priority": "x"}]},
        headers=rw,
    )
    await send(
        "batch does not fit", "POST", batch, json={"children": [{"subject": "b"}] * 4}, headers=rw
    )
    await send("batch stale If-Match", "POST", batch, json=two, headers={**rw, "If-Match": '"1"'})
    await send(
        "batch of a child", "POST", f"{BASE}/{child_id}/children/batch", json=two, headers=rw
    )
    await send(
        "batch missing parent", "POST", f"{BASE}/{MISSING}/children/batch", json=two, headers=rw
    )
    await send("batch no auth", "POST", batch, json=two)

    # --- getConversation
    await send("get", "GET", f"{BASE}/{parent}", headers=ro)
    await send("get child", "GET", f"{BASE}/{child_id}", headers=rw)
    await send("head", "HEAD", f"{BASE}/{parent}", headers=ro)
    await send("get missing", "GET", f"{BASE}/{MISSING}", headers=ro)
    await send("get other workspace", "GET", f"{BASE}/{parent}", headers=stranger)
    await send("get bad id", "GET", f"{BASE}/123", headers=ro)
    await send("get write-only", "GET", f"{BASE}/{parent}", headers=wo)
    await send("get no auth", "GET", f"{BASE}/{parent}")
    await send("get no auth, bad id", "GET", f"{BASE}/123")

    # --- listChildConversations
    page = await send("list", "GET", children, headers=ro)
    await send("list status", "GET", children, params={"status": "open,pending"}, headers=ro)
    first_page = await send("list page 1", "GET", children, params={"limit": 2}, headers=ro)
    cursor = first_page.json()["next_cursor"]
    assert page.status_code == 200
    assert cursor
    await send("list page 2", "GET", children, params={"limit": 2, "cursor": cursor}, headers=ro)
    await send("list repeated limit", "GET", f"{children}?limit=1&limit=3", headers=ro)
    for label, params in [
        ("limit 0", {"limit": "0"}),
        ("limit 101", {"limit": "101"}),
        ("limit abc", {"limit": "abc"}),
        ("bad cursor", {"cursor": "short"}),
        ("bad status", {"status": "open,nope"}),
        ("all bad", {"limit": "-1", "cursor": "?", "status": ","}),
    ]:
        await send(f"list {label}", "GET", children, params=params, headers=ro)
    await send(
        "list bad id and limit", "GET", f"{BASE}/x/children", params={"limit": 0}, headers=ro
    )
    await send("list missing parent", "GET", f"{BASE}/{MISSING}/children", headers=ro)
    await send("list write-only", "GET", children, headers=wo)
    await send("list no auth, bad limit", "GET", children, params={"limit": 0})
    return _normalized(transcript, workspace)


def _normalized(transcript: Transcript, workspace: str) -> Transcript:
    """Ids by order of appearance, times and the workspace replaced by placeholders."""
    ids: dict[str, str] = {}

    def replace(text: str) -> str:
        text = text.replace(workspace, "<workspace>")
        text = _UUID.sub(lambda m: ids.setdefault(m.group(), f"<id{len(ids)}>"), text)
        text = _CURSOR.sub('"next_cursor":"<cursor>"', text)
        return _TIME.sub("<time>", text)

    return [
        (
            label,
            status,
            [(name, replace(value)) for name, value in headers],
            replace(body.decode()).encode(),
        )
        for label, status, headers, body in transcript
    ]


async def _run(app: FastAPI, settings: Settings, spy: Spy) -> tuple[Transcript, int]:
    before = spy.calls
    async with asgi_client(app) as client:
        transcript = await _script(client, settings)
    return transcript, spy.calls - before


async def test_lean_route_answers_as_fastapi_does(
    lean_app: FastAPI,
    normal_app: FastAPI,
    lean_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = Spy()
    monkeypatch.setattr(fastapi.routing, "solve_dependencies", spy)
    lean, lean_solved = await _run(lean_app, lean_settings, spy)
    normal, normal_solved = await _run(normal_app, lean_settings, spy)

    assert [entry[0] for entry in lean] == [entry[0] for entry in normal]
    for got, expected in zip(lean, normal, strict=True):
        assert got == expected, got[0]
    # The script covers what it says it does: successes, replays, refusals, 413s and 422s.
    statuses = {status for _, status, _, _ in normal}
    assert {200, 201, 401, 403, 404, 409, 412, 413, 422} <= statuses, statuses
    assert any(("idempotent-replayed", "true") in headers for _, _, headers, _ in normal)
    # The apps differ: FastAPI's handler solved the dependencies of every request with a
    # parsable body in the normal app; in the lean app, of the invalid ones only (422s).
    succeeded = sum(1 for _, status, _, _ in normal if status < 300)
    assert normal_solved - lean_solved >= succeeded > 10, (normal_solved, lean_solved)
    assert lean_solved > 0


def test_the_hot_routes_take_the_fast_path() -> None:
    """Each of the five hot routes fits the fast path (else LeanRoute gives FastAPI's handler)."""
    fitting = {
        route.operation_id
        for route in router.routes
        if isinstance(route, fastapi.routing.APIRoute) and _fits(route)
    }
    assert fitting == {
        "createConversation",
        "createChildConversation",
        "createChildConversationsBatch",
        "getConversation",
        "listChildConversations",
    }
    assert all(isinstance(route, LeanRoute) for route in router.routes)


async def test_dependency_overrides_take_fastapis_handler(
    lean_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an override set, the fast path steps aside: FastAPI's handler applies it."""
    spy = Spy()
    monkeypatch.setattr(fastapi.routing, "solve_dependencies", spy)
    route = next(r for r in router.routes if getattr(r, "operation_id", None) == "getConversation")
    assert isinstance(route, fastapi.routing.APIRoute)
    scope_check = route.dependant.dependencies[0].call
    assert scope_check is not None

    async def nobody() -> Principal:
        raise InsufficientScope("overridden")

    monkeypatch.setitem(lean_app.dependency_overrides, scope_check, nobody)
    async with asgi_client(lean_app) as client:
        response = await client.get(f"{BASE}/{MISSING}")
    assert response.status_code == 403
    assert response.json()["detail"] == "overridden"
    assert spy.calls == 1


async def test_database_unavailable_answers_alike(database_url: str) -> None:
    """A 503 (with Retry-After) raised by the endpoint is the same through either handler."""
    # A port nothing listens on: the lifespan tolerates it, every statement fails fast.
    dead = re.sub(r":\d+/", ":1/", database_url, count=1)
    assert dead != database_url
    settings = make_settings(dead, db_connect_timeout_seconds=1, db_pool_timeout_seconds=1)
    jwt = mint_token(settings, workspace="ws_x", subject="agent-1", scopes=f"{READ} {WRITE}")
    auth = {"Authorization": f"Bearer {jwt}"}
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", BASE, {"subject": "x"}),
        ("POST", f"{BASE}/{MISSING}/children", {"subject": "x"}),
        ("POST", f"{BASE}/{MISSING}/children/batch", {"children": [{"subject": "x"}]}),
        ("GET", f"{BASE}/{MISSING}", None),
        ("GET", f"{BASE}/{MISSING}/children", None),
    ]
    answers: list[list[tuple[int, list[tuple[str, str]], bytes]]] = []
    for lean in (True, False):
        async for app in _app(settings, lean):
            async with asgi_client(app) as client:
                answers.append([])
                for method, url, body in requests:
                    response = await client.request(method, url, json=body, headers=auth)
                    assert_unavailable(response)
                    headers = [h for h in response.headers.multi_items() if h[0] != "x-request-id"]
                    answers[-1].append((response.status_code, headers, response.content))
    assert answers[0] == answers[1]
