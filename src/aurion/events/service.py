"""The feed's rules: cursors, and pages in commit order (no HTTP, no commit here)."""

from __future__ import annotations

import base64
import struct
from uuid import UUID

import orjson

from aurion.auth.principal import Principal
from aurion.db.driver import Db
from aurion.events import repository

# The feed's start: before every event (txids are positive).
START = (0, UUID(int=0))
_POSITION = struct.Struct(">q16s")


def encode_cursor(txid: int, event_id: UUID) -> str:
    """A position in the feed, (txid, id), as 32 base64url characters."""
    raw = _POSITION.pack(txid, event_id.bytes)
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[int, UUID]:
    """The position a cursor stands for (the router's pattern makes every accepted one valid)."""
    txid, raw = _POSITION.unpack(base64.urlsafe_b64decode(cursor))
    return txid, UUID(bytes=raw)


async def list_events(
    db: Db, principal: Principal, *, after: str | None, types: list[str] | None, limit: int
) -> bytes:
    """A page of the workspace's events after ``after``, oldest first, as JSON."""
    position = decode_cursor(after) if after else START
    row = await repository.feed(
        db, principal.workspace_id, after=position, types=types, limit=limit
    )
    if row["last_id"] is None:
        cursor = after or encode_cursor(*START)
    else:
        cursor = encode_cursor(row["last_txid"], row["last_id"])
    items: bytes = row["items"]
    return b'{"items":' + items + b',"next_cursor":' + orjson.dumps(cursor) + b"}"
