"""The request boundary's helpers: preconditions, Idempotency-Key claims, and responses.

Bodies rendered by PostgreSQL are sent as they are; headers are the only thing added here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Header, Request
from pydantic import BaseModel
from starlette.responses import Response

from aurion.db.json_sql import Document
from aurion.idempotency.service import Claim, StoredResponse, fingerprint
from aurion.settings import Settings

JSON = "application/json"


# A parameter of the operation itself, parsed by if_match_versions in the endpoint: a
# dependency of its own would cost FastAPI about 50 µs of CPU per request to solve.
IfMatch = Annotated[
    str | None,
    Header(
        max_length=1024,
        description='Only act if the conversation\'s ETag matches, e.g. `"3"` (412 otherwise).',
        examples=['"1"'],
    ),
]


def if_match_versions(if_match: str | None) -> list[int] | None:
    """The versions ``If-Match`` accepts (RFC 9110 strong comparison): None for no header or
    ``*`` (any current version); an empty list when no listed tag can ever match."""
    if if_match is None:
        return None
    versions: list[int] = []
    for candidate in if_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return None
        if len(tag) >= 3 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
            versions.append(int(tag[1:-1]))
    return versions


def claim_for(request: Request, body: BaseModel, key: str | None) -> Claim | None:
    """The claim an Idempotency-Key makes for this request (None without a key)."""
    if key is None:
        return None
    settings: Settings = request.app.state.settings
    return Claim(
        key,
        # The path as the server received it: request.url would parse a whole URL for it.
        fingerprint(request.method, request.scope["path"], body),
        timedelta(hours=settings.idempotency_ttl_hours),
    )


def document_response(document: Document, status_code: int = 200) -> Response:
    headers = {}
    if document.version is not None:
        headers["ETag"] = f'"{document.version}"'
    if status_code == 201 and document.id is not None:
        headers["Location"] = f"/api/v2/conversations/{document.id}"
    return Response(document.body, status_code, headers, JSON)


def replayed_response(stored: StoredResponse) -> Response:
    headers = {name.title(): value for name, value in stored.headers.items()}
    headers["Idempotent-Replayed"] = "true"
    return Response(stored.body, stored.status_code, headers, JSON)


def written_response(result: Document | StoredResponse) -> Response:
    """201 with the created object, or the stored response of an earlier request."""
    if isinstance(result, StoredResponse):
        return replayed_response(result)
    return document_response(result, 201)
