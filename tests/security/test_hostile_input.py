"""Hostile input is a 4xx with a clear body, never a 500 and never a write (issue #3, SPEC §5)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Factory

CONVERSATIONS = "/api/v2/conversations"


def children(conversation_id: object) -> str:
    return f"{CONVERSATIONS}/{conversation_id}/children"


async def rows(engine: AsyncEngine, workspace: str) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM conversations WHERE workspace_id = :w"), {"w": workspace}
        )
        return int(result.scalar_one())


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


BAD_CREATE_BODIES: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "NUL in subject": ({"subject": "a\x00b"}, ["body", "subject"]),
    "escape char in a label": ({"subject": "ok", "category": "a\x1bb"}, ["body", "category"]),
    "DEL in a tag": ({"subject": "ok", "tags": ["a\x7f"]}, ["body", "tags", 0]),
    "NUL in a message body": (
        {"subject": "ok", "messages": [{"body": "hi\x00"}]}, ["body", "messages", 0, "body"]),
    "NUL in custom_attrs value": (
        {"subject": "ok", "custom_attrs": {"a": "x\x00"}}, ["body", "custom_attrs"]),
    "NUL in custom_attrs key": (
        {"subject": "ok", "custom_attrs": {"a\x00": 1}}, ["body", "custom_attrs"]),
    "subject over 500": ({"subject": "s" * 501}, ["body", "subject"]),
    "label over 255": ({"subject": "ok", "company_name": "c" * 256}, ["body", "company_name"]),
    "tag over 64": ({"subject": "ok", "tags": ["t" * 65]}, ["body", "tags", 0]),
    "message body over 64 KiB": (
        {"subject": "ok", "messages": [{"body": "m" * (64 * 1024 + 1)}]},
        ["body", "messages", 0, "body"]),
    "51 tags": ({"subject": "ok", "tags": ["t"] * 51}, ["body", "tags"]),
    "100k tags": ({"subject": "ok", "tags": ["t"] * 100_000}, ["body", "tags"]),
    "101 messages": ({"subject": "ok", "messages": [{"body": "m"}] * 101}, ["body", "messages"]),
    "custom_attrs over 16 KiB": (
        {"subject": "ok", "custom_attrs": {"a": "x" * 17_000}}, ["body", "custom_attrs"]),
    "custom_attrs with 5000 keys": (
        {"subject": "ok", "custom_attrs": {f"k{n}": n for n in range(5000)}},
        ["body", "custom_attrs"]),
    "custom_attrs 40 deep": ({"subject": "ok", "custom_attrs": nested(40)},
                             ["body", "custom_attrs"]),
    "custom_attrs 900 deep": ({"subject": "ok", "custom_attrs": nested(900)}, ["body"]),
    "huge integer in custom_attrs": (
        {"subject": "ok", "custom_attrs": {"n": 10**301}}, ["body", "custom_attrs"]),
    "integer past 64 bits in custom_attrs": (
        {"subject": "ok", "custom_attrs": {"n": 2**63}}, ["body", "custom_attrs"]),
    "float past int64 in custom_attrs": (
        {"subject": "ok", "custom_attrs": {"f": 1.8446744073709552e19}}, ["body", "custom_attrs"]),
    "integer below int64 in metadata": (
        {"subject": "ok", "messages": [{"body": "b", "metadata": {"n": -(2**63) - 1}}]},
        ["body", "messages", 0, "metadata"]),
    "time as a number": ({"subject": "ok", "planned_end": 0}, ["body", "planned_end"]),
    "time that leaves the calendar in UTC": (
        {"subject": "ok", "planned_start": "0001-01-01T00:00:00+01:00"},
        ["body", "planned_start"]),
    "boolean as a number": (
        {"subject": "ok", "messages": [{"body": "b", "is_internal": 0}]},
        ["body", "messages", 0, "is_internal"]),
    "integer as a string": (
        {"subject": "ok", "planned_effort_minutes": "90"}, ["body", "planned_effort_minutes"]),
    "planned_effort_minutes out of range": (
        {"subject": "ok", "planned_effort_minutes": 2**63}, ["body", "planned_effort_minutes"]),
    "negative planned_effort_minutes": (
        {"subject": "ok", "planned_effort_minutes": -1}, ["body", "planned_effort_minutes"]),
    "naive datetime": (
        {"subject": "ok", "sla_resolution_due": "2030-01-01T00:00:00"},
        ["body", "sla_resolution_due"]),
    "year 10000": (
        {"subject": "ok", "sla_resolution_due": "10000-01-01T00:00:00Z"},
        ["body", "sla_resolution_due"]),
    "unknown status": ({"subject": "ok", "status": "deleted"}, ["body", "status"]),
    "unknown field": ({"subject": "ok", "colour": "red"}, ["body", "colour"]),
    "body is a list": ([{"subject": "ok"}], ["body"]),  # type: ignore[dict-item]
    "body is a string": ("subject", ["body"]),  # type: ignore[dict-item]
}  # fmt: skip

SERVER_OWNED = [
    "id", "version", "created_at", "updated_at", "parent_id", "deleted_at", "archived_at",
    "merged_into_id", "merged_at", "merged_by", "is_spam", "auto_resolved_by_ai", "tab_counts",
    "ai_sentiment", "ai_suggestion", "ai_copilot_context", "total_time_spent_minutes",
    "workspace_id", "assigned_at", "sla_last_escalation_at",
]  # fmt: skip


class TestCreateBodies:
    @pytest.mark.parametrize("case", list(BAD_CREATE_BODIES))
    async def test_bad_body_is_422_and_writes_nothing(
        self, client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine,
        workspace: str, case: str,
    ) -> None:  # fmt: skip
        body, loc = BAD_CREATE_BODIES[case]
        response = await client.post(
            CONVERSATIONS,
            content=json.dumps(body).encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail[0]["loc"][: len(loc)] == loc
        assert all(set(issue) == {"loc", "msg", "type"} for issue in detail)
        assert await rows(engine, workspace) == 0

    @pytest.mark.parametrize("field", SERVER_OWNED)
    async def test_server_owned_fields_are_refused(
        self, client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine,
        workspace: str, field: str,
    ) -> None:  # fmt: skip
        values = {"id": str(uuid.uuid4()), "version": 7, "is_spam": True, "tab_counts": {}}
        body = {"subject": "ok", field: values.get(field, "2019-08-24T14:15:22Z")}
        response = await client.post(CONVERSATIONS, json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", field]
        assert await rows(engine, workspace) == 0

    async def test_limits_are_inclusive(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        """The refusals above are at the limit + 1: the limit itself is accepted."""
        body = {
            "subject": "s" * 500,
            "company_name": "c" * 255,
            "tags": [f"{n:02d}" + "t" * 62 for n in range(50)],
            "custom_attrs": nested(31, "leaf"),
            "messages": [{"body": "tab\tand\nnewline"}] * 100,
            "planned_effort_minutes": 10_000_000.0,  # JSON has one number type: an integer
        }
        response = await client.post(CONVERSATIONS, json=body, headers=auth)
        assert response.status_code == 201, response.text
        assert response.json()["tab_counts"]["messages"] == 100
        assert response.json()["planned_effort_minutes"] == 10_000_000

    async def test_64_bit_integers_round_trip(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        attrs = {
            "max": 2**63 - 1,
            "min": -(2**63),
            "big float": 9.2e18,
            "tiny": 1e-300,
            "control": "tab\tbell\u0007",
        }
        created = await client.post(
            CONVERSATIONS, json={"subject": "ok", "custom_attrs": attrs}, headers=auth
        )
        assert created.status_code == 201, created.text
        got = await client.get(f"{CONVERSATIONS}/{created.json()['id']}", headers=auth)
        assert got.json()["custom_attrs"] == attrs


class TestRawBodies:
    """Bytes no JSON encoder would produce, sent to both POST endpoints."""

    RAW = {
        "malformed JSON": b'{"subject": "unterminated',
        "raw NUL inside a string": b'{"subject":"a\x00b"}',
        "invalid UTF-8": b'{"subject":"\xff\xfe"}',
        "Latin-1 text": '{"subject":"café"}'.encode("latin-1"),
        "lone surrogate escape": b'{"subject":"\\ud800"}',
        "NaN": b'{"subject":"ok","custom_attrs":{"a":NaN}}',
        "Infinity literal": b'{"subject":"ok","custom_attrs":{"a":1e999}}',
        "4301-digit integer": b'{"subject":"ok","custom_attrs":{"a":' + b"1" * 4301 + b"}}",
        "nesting past the parser's limit": b'{"subject":"ok","custom_attrs":'
        + b'{"a":' * 100_000
        + b"1"
        + b"}" * 100_000
        + b"}",
        "array nesting": b'{"subject":"ok","tags":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "empty body": b"",
        "null": b"null",
        "trailing garbage": b'{"subject":"ok"} x',
    }

    @pytest.mark.parametrize("case", list(RAW))
    async def test_unparsable_or_unstorable_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], create_parent: Factory,
        engine: AsyncEngine, workspace: str, case: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        for url in (CONVERSATIONS, children(parent["id"])):
            response = await client.post(
                url, content=self.RAW[case], headers={**auth, "Content-Type": "application/json"}
            )
            assert response.status_code == 422, (url, response.text)
            assert response.json()["detail"][0]["loc"][0] == "body"
        assert await rows(engine, workspace) == 1

    @pytest.mark.parametrize(
        "content_type",
        [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
         "application/xml", "application/jsonx"],
    )  # fmt: skip
    async def test_a_body_that_is_not_sent_as_json_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], create_parent: Factory,
        content_type: str | None,
    ) -> None:  # fmt: skip
        """Decision: JSON bodies need a JSON media type; anything else is a clear 422."""
        parent = await create_parent()
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        for url in (CONVERSATIONS, children(parent["id"])):
            response = await client.post(url, content=b'{"subject":"ok"}', headers=headers)
            assert response.status_code == 422
            assert response.json() == {
                "detail": [{
                    "loc": ["body"],
                    "msg": "The body must be JSON, sent with Content-Type: application/json.",
                    "type": "content_type",
                }]
            }  # fmt: skip

    @pytest.mark.parametrize(
        "content_type",
        ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
    )
    async def test_json_media_types_are_accepted(
        self, client: httpx.AsyncClient, auth: dict[str, str], content_type: str
    ) -> None:
        response = await client.post(
            CONVERSATIONS,
            content=b'{"subject":"ok"}',
            headers={**auth, "Content-Type": content_type},
        )
        assert response.status_code == 201


class TestBodySize:
    LIMIT = 1024 * 1024

    def big(self) -> bytes:
        return b'{"subject":"ok","custom_attrs":{"a":"' + b"x" * self.LIMIT + b'"}}'

    async def test_over_1_mib_with_content_length_is_413(
        self, client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine, workspace: str
    ) -> None:
        response = await client.post(
            CONVERSATIONS, content=self.big(), headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert await rows(engine, workspace) == 0

    async def test_over_1_mib_chunked_without_content_length_is_413(
        self, client: httpx.AsyncClient, auth: dict[str, str], create_parent: Factory,
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        body = self.big()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        for url in (CONVERSATIONS, children(parent["id"])):
            request = client.build_request(
                "POST", url, content=chunks(), headers={**auth, "Content-Type": "application/json"}
            )
            assert "content-length" not in request.headers
            assert request.headers["transfer-encoding"] == "chunked"
            response = await client.send(request)
            assert response.status_code == 413, response.text
            assert response.json()["code"] == "payload_too_large"
        assert await rows(engine, workspace) == 1

    async def test_a_lying_content_length_is_not_trusted(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        """Content-Length claims 10 bytes; the stream carries more than the limit."""
        body = self.big()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        request = client.build_request(
            "POST", CONVERSATIONS, content=chunks(),
            headers={**auth, "Content-Type": "application/json", "Content-Length": "10"},
        )  # fmt: skip
        response = await client.send(request)
        assert response.status_code == 413


class TestParameters:
    @pytest.mark.parametrize(
        "query",
        ["limit=0", "limit=101", "limit=-1", "limit=" + "9" * 40, "limit=1e3", "limit=1.5",
         "limit=abc", "limit=", "limit=%00", "cursor=short", "cursor=%00" * 22,
         "cursor=" + "A" * 23, "cursor=" + "/" * 22],
    )  # fmt: skip
    async def test_bad_query_parameters_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], create_parent: Factory, query: str
    ) -> None:
        parent = await create_parent()
        response = await client.get(f"{children(parent['id'])}?{query}", headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][0] == "query"

    @pytest.mark.parametrize(
        "conversation_id",
        ["string", "0", "%00", "1" * 5000, "00000000-0000-0000-0000-00000000000g", "%F0%9F%92%A9"],
    )
    async def test_bad_path_ids_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], conversation_id: str
    ) -> None:
        for method, url in (
            ("GET", f"{CONVERSATIONS}/{conversation_id}"),
            ("GET", children(conversation_id)),
            ("POST", children(conversation_id)),
        ):
            response = await client.request(method, url, json={"subject": "x"}, headers=auth)
            assert response.status_code == 422, (method, url, response.text)
            assert response.json()["detail"][0]["loc"] == ["path", "conversation_id"]

    async def test_an_over_long_if_match_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], create_parent: Factory
    ) -> None:
        parent = await create_parent()
        response = await client.post(
            children(parent["id"]), json={"subject": "x"}, headers={**auth, "If-Match": "1" * 2000}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["header", "if-match"]
