"""Typed path, query and header parameters of the conversations API."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Header, Path, Query

ConversationID = Annotated[
    UUID,
    Path(
        description="The conversation's id (a UUID).",
        examples=["0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70"],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x20-\x7e]{1,255}$",
        description="Makes a retry safe: 1–255 printable ASCII characters, unique per "
        "operation. Within 24 h, a request with the same key and body gets the first "
        "response back (`Idempotent-Replayed: true`) and nothing new is written.",
        examples=["3f1c9a2e-retry-safe-key"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.", examples=[20])]
# A cursor is a base64url-encoded child id (22 characters): the pattern makes any accepted
# value decodable, so a forged or truncated cursor is a 422 like any other bad parameter.
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{22}$",
        description="`next_cursor` of the previous page; omit for the first page.",
        examples=["AZOwonxOfRqfPiuMTV5vcA"],
    ),
]
_STATUS = "(new|open|pending|on_hold|resolved|closed)"
StatusFilter = Annotated[
    str | None,
    Query(
        pattern=f"^{_STATUS}(,{_STATUS})*$",
        description="Only children with one of these statuses, comma-separated "
        "(new, open, pending, on_hold, resolved, closed).",
        examples=["open,pending"],
    ),
]
