"""Business rules of conversations: no HTTP here, and no commit (each write is one statement).

The rules themselves (inheritance, refusals, counters, the parent's side effects) are written
once, in the statements of repository.py, where they run under the parent's row lock; this
module prepares their values and turns their outcome into results and errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import uuid_utils.compat as uuid7

from aurion.auth.principal import Principal
from aurion.conversations import repository
from aurion.conversations.errors import (
    ChildrenLimitReached,
    ConversationNotFound,
    ParentArchived,
    ParentIsChild,
    ParentIsSpam,
    ParentMerged,
    PreconditionFailed,
)
from aurion.conversations.schemas import (
    ChildConversationBatchCreate,
    ChildConversationCreate,
    ConversationCreate,
)
from aurion.db.driver import Db, Refused
from aurion.db.json_sql import Document
from aurion.db.turns import Turns
from aurion.errors import InvalidInput
from aurion.idempotency import service as idempotency
from aurion.idempotency.service import Claim, StoredResponse


def new_id() -> UUID:
    """A time-ordered UUID (v7): ids sort by creation, which keyset pagination relies on."""
    return uuid7.uuid7()


def _refusal(refused: Refused, max_children: int, batch_size: int | None = None) -> Exception:
    detail = refused.detail
    match refused.code:
        case "conversation_not_found":
            return ConversationNotFound()
        case "message_not_in_parent":
            child, index = (int(part) - 1 for part in detail.split(":"))
            where: list[str | int] = ["body"]
            if batch_size is not None:
                where += ["children", child]
            return InvalidInput(
                [
                    {
                        "loc": [*where, "copy_message_ids", index],
                        "msg": "Not a message of the parent conversation.",
                        "type": "message_not_in_parent",
                    }
                ]
            )
        case "precondition_failed":
            return PreconditionFailed(
                f'The conversation is at version "{detail}"; reload it and retry.'
            )
        case "parent_merged":
            return ParentMerged(
                f"The conversation was merged into {detail}; create the child there."
            )
        case "parent_is_spam":
            return ParentIsSpam()
        case "parent_archived":
            return ParentArchived()
        case "parent_is_child":
            return ParentIsChild(
                f"The conversation is itself a child of {detail}; children are one level deep."
            )
        case "children_limit_reached":
            if batch_size is None:
                return ChildrenLimitReached(
                    f"The conversation already has the maximum of {max_children} children."
                )
            return ChildrenLimitReached(
                f"The conversation can take {detail} more children (at most {max_children}); "
                f"the batch has {batch_size}."
            )
    raise RuntimeError(f"unknown refusal {refused.code!r}")


def _key_waited_too_long(exc: asyncpg.LockNotAvailableError) -> bool:
    # lock_timeout while waiting for a concurrent request's claim of the same key (the error's
    # context names the relation it waited on); a busy parent row is a 503 instead.
    return "idempotency_keys" in (getattr(exc, "context", None) or "")


# The item's columns for overridden fields and the first message, by column: all null for a
# child that overrides nothing and has no message (the usual case), built once.
_OVERRIDE_KEYS = tuple((f"o_{column}", column) for column in repository.INHERITED_COLUMNS)
_MESSAGE_KEYS = tuple((f"m_{column}", column) for column in repository.NEW_MESSAGE_COLUMNS)
_NO_OVERRIDES = dict.fromkeys(key for key, _ in _OVERRIDE_KEYS)
_NO_MESSAGE = dict.fromkeys(key for key, _ in _MESSAGE_KEYS)


def _child_item(body: ChildConversationCreate, n: int) -> dict[str, Any]:
    """One child to create, as the statement's ``items`` take it (repository.ITEM_COLUMNS)."""
    overrides = body.overrides()
    message = body.message.model_dump() if body.message is not None else None
    copies = list(body.copy_message_ids)
    item: dict[str, Any] = {
        "n": n,
        "child_id": new_id(),
        "subject": body.subject,
        "overridden": list(overrides),
    }
    if overrides:
        item.update((key, overrides.get(column)) for key, column in _OVERRIDE_KEYS)
    else:
        item.update(_NO_OVERRIDES)
    if message is not None:
        item.update((key, message[column]) for key, column in _MESSAGE_KEYS)
    else:
        item.update(_NO_MESSAGE)
    item.update(
        copy_ids=copies,
        # Time-ordered ids, made in order: the copies (in the parent's order), then the message.
        message_ids=[new_id() for _ in range(len(copies) + (message is not None))],
        activity_ids=[new_id(), new_id()],
        event_id=new_id(),
    )
    return item


# What coalesced requests share (the first one's values): the rest is each one's item.
_SHARED_VALUES = ("workspace_id", "caller", "now", "max_children", "if_match")
_REOPENING = ("reopened_activity_id", "reopened_event_id")


# Called after the items are made: the ids of the parent's activity and event then follow the
# children's (ids are time-ordered, and the event feed's order within a statement is by id).
def _statement_values(
    principal: Principal,
    parent_id: UUID,
    now: datetime,
    *,
    if_match: list[int] | None,
    claim: Claim | None,
    max_children: int,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "workspace_id": principal.workspace_id,
        "caller": principal.subject,
        "parent_id": parent_id,
        "now": now,
        "max_children": max_children,
        "if_match": if_match,
        "reopened_activity_id": new_id(),
        "reopened_event_id": new_id(),
    }
    if claim is not None:
        values.update(claim.values(now))
    return values


@dataclass(frozen=True, slots=True)
class _SingleChild:
    """One request for a plain child, ready for its statement (repository.create_child)."""

    values: dict[str, Any]
    item: dict[str, Any]
    claim: Claim | None


async def create_child(
    db: Db,
    principal: Principal,
    parent_id: UUID,
    body: ChildConversationCreate,
    *,
    if_match: list[int] | None,
    claim: Claim | None,
    max_children: int,
    turns: Turns,
) -> Document | StoredResponse:
    """Create a child of ``parent_id`` that inherits its context (SPEC §2) but for what the
    body overrides, with copies of the parent's messages and a first message (SPEC §9).

    A plain child (no overrides, message or copies) with no If-Match is coalesced: such
    requests by one caller that queue up in this process while one of theirs runs go
    together, in one statement (``_create_plain_children``), each answered as if it had
    come alone. Others take turns per parent in this process (``turns``)."""
    now = datetime.now(UTC)
    item = _child_item(body, 1)
    del item["n"]
    values = _statement_values(
        principal, parent_id, now, if_match=if_match, claim=claim, max_children=max_children
    )
    request = _SingleChild(values, item, claim)
    try:
        if if_match is None and repository.is_plain(item):
            row = await turns.together(
                (principal.workspace_id, principal.subject),
                request,
                partial(_create_plain_children, db),
            )
        else:
            async with turns.turn(parent_id):
                row = await _create_one(db, request)
    except Refused as refused:
        raise _refusal(refused, max_children) from None
    except asyncpg.LockNotAvailableError as exc:
        if _key_waited_too_long(exc):
            raise idempotency.in_use() from exc
        raise
    if claim is not None and not row["claimed"]:
        return await idempotency.replay(db, principal, claim)
    return Document(row["body"], item["child_id"], 1)


async def _create_plain_children(db: Db, requests: list[_SingleChild]) -> list[Any]:
    """The rows of single creations of plain children by one caller (a row has ``claimed``
    and ``body``), or the error each raises, in order.

    Several are one statement (repository.create_plain_children_together). If that statement
    would refuse any of them, or waits on a lock past ``lock_timeout``, it writes nothing and
    they run apart (``_apart``), so that each gets exactly its own answer: as if it had come
    alone. A single parent locked that long is the answer for all of its requests."""
    if len(requests) == 1:
        return [await _outcome(_create_one(db, requests[0]))]
    items = [
        {
            "n": n,
            **{name: r.values[name] for name in ("parent_id", *_REOPENING)},
            **{name: r.item[name] for name in repository.PLAIN_ITEM_COLUMNS},
            **_claim_item(r),
        }
        for n, r in enumerate(requests, 1)
    ]
    shared = {name: requests[0].values[name] for name in _SHARED_VALUES}
    try:
        bodies = await repository.create_plain_children_together(db, shared, items)
    except Refused:
        return await _apart(db, requests)
    except asyncpg.LockNotAvailableError as exc:
        if not _key_waited_too_long(exc) and _one_parent(requests):
            raise
        return await _apart(db, requests)
    return [{"claimed": body is not None, "body": body} for body in bodies]


async def _apart(db: Db, requests: list[_SingleChild]) -> list[Any]:
    """A group that could not go as one: each parent's requests together again, all parents
    at once (a refused or locked parent then holds up only its own requests); the requests of
    a single parent one by one, in order."""
    by_parent: dict[UUID, list[int]] = {}
    for index, request in enumerate(requests):
        by_parent.setdefault(request.values["parent_id"], []).append(index)
    if len(by_parent) == 1:
        return [await _outcome(_create_one(db, request)) for request in requests]
    parts = list(by_parent.values())
    answers = await asyncio.gather(
        *(_outcome(_create_plain_children(db, [requests[i] for i in part])) for part in parts)
    )
    outcomes: list[Any] = [None] * len(requests)
    for part, answer in zip(parts, answers, strict=True):
        for position, index in enumerate(part):
            outcomes[index] = answer[position] if isinstance(answer, list) else answer
    return outcomes


async def _create_one(db: Db, request: _SingleChild) -> Any:
    return await repository.create_child(
        db, request.values, request.item, idempotent=request.claim is not None
    )


async def _outcome(call: Awaitable[Any]) -> Any:
    """What ``call`` returns, or the error it raises (the request's own outcome)."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - raised by the request it belongs to
        return exc


def _one_parent(requests: list[_SingleChild]) -> bool:
    first = requests[0].values["parent_id"]
    return all(r.values["parent_id"] == first for r in requests)


def _claim_item(request: _SingleChild) -> dict[str, Any]:
    """A coalesced request's key, fingerprint and expiry (all null without a key)."""
    if request.claim is None:
        return {"key": None, "fingerprint": None, "expires_at": None}
    return request.claim.values(request.values["now"])


async def create_children(
    db: Db,
    principal: Principal,
    parent_id: UUID,
    body: ChildConversationBatchCreate,
    *,
    if_match: list[int] | None,
    claim: Claim | None,
    max_children: int,
) -> Document | StoredResponse:
    """Create several children of ``parent_id`` at once, all or none (SPEC §9)."""
    now = datetime.now(UTC)
    items = [_child_item(child, n) for n, child in enumerate(body.children, 1)]
    values = _statement_values(
        principal, parent_id, now, if_match=if_match, claim=claim, max_children=max_children
    )
    try:
        row = await repository.create_children(db, values, items, idempotent=claim is not None)
    except Refused as refused:
        raise _refusal(refused, max_children, len(items)) from None
    except asyncpg.LockNotAvailableError as exc:
        if _key_waited_too_long(exc):
            raise idempotency.in_use() from exc
        raise
    if claim is not None and not row["claimed"]:
        return await idempotency.replay(db, principal, claim)
    return Document(row["body"])


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create_conversation(
    db: Db, principal: Principal, body: ConversationCreate, *, claim: Claim | None
) -> Document | StoredResponse:
    """Create a conversation (a potential parent) with optional initial messages."""
    now = datetime.now(UTC)
    conversation_id = new_id()
    fields = body.model_dump(exclude={"subject", "messages"})
    values: dict[str, Any] = {name: fields[name] for name in repository.WRITABLE_COLUMNS}
    values["custom_attrs"] = _json(values["custom_attrs"])
    has_assignee = fields["assignee_user_id"] is not None or fields["assignee_team_id"] is not None
    messages = [m.model_dump() for m in body.messages]
    for column in repository.MESSAGE_COLUMNS:
        if column == "id":
            values["message_id"] = [new_id() for _ in messages]
        elif column == "metadata":
            values["message_metadata"] = [_json(m["metadata"]) for m in messages]
        else:
            values[f"message_{column}"] = [m[column] for m in messages]
    values.update(
        workspace_id=principal.workspace_id,
        caller=principal.subject,
        conversation_id=conversation_id,
        subject=body.subject,
        now=now,
        assigned_at=now if has_assignee else None,
        activity_id=new_id(),
        event_id=new_id(),
    )
    if claim is not None:
        values.update(claim.values(now))
    try:
        row = await repository.create_conversation(db, values, idempotent=claim is not None)
    except asyncpg.LockNotAvailableError as exc:
        if _key_waited_too_long(exc):
            raise idempotency.in_use() from exc
        raise
    if claim is not None and not row["claimed"]:
        return await idempotency.replay(db, principal, claim)
    return Document(row["body"], conversation_id, 1)


async def get_conversation(db: Db, principal: Principal, conversation_id: UUID) -> Document:
    """One conversation with its newest messages and counters."""
    row = await repository.get_conversation(db, principal.workspace_id, conversation_id)
    if row is None:
        raise ConversationNotFound()
    return Document(row["body"], conversation_id, row["version"])


def encode_cursor(last_id: UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> UUID:
    """The id a cursor stands for; ValueError if it is not one this API returned."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not a cursor this API returned") from exc


async def list_children(
    db: Db,
    principal: Principal,
    parent_id: UUID,
    *,
    limit: int,
    before: UUID | None,
    statuses: list[str] | None = None,
) -> Document:
    """A page of a conversation's children, newest first, the cursor of the next page, and a
    summary of all its children."""
    row = await repository.list_children(
        db, principal.workspace_id, parent_id, before=before, limit=limit, statuses=statuses
    )
    if not row["found"]:
        raise ConversationNotFound()
    cursor = orjson.dumps(encode_cursor(row["last_id"]) if row["more"] else None)
    return Document(
        b'{"items":'
        + row["items"]
        + b',"next_cursor":'
        + cursor
        + b',"summary":'
        + row["summary"]
        + b"}"
    )
