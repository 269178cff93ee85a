"""Application errors and the handlers that render every error in the documented shapes.

* 422: FastAPI's shape, ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.
* everything else: ``{"detail": "<sentence>", "code": "<snake_case>"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Union

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger("aurion.errors")

DB_RETRY_AFTER_SECONDS = 2


class AppError(Exception):
    """An error a client can act on: a status, a stable code and a human sentence."""

    status_code = 400
    code = "bad_request"
    message = "The request cannot be served."
    # An error whose body has more than detail and code declares its own body model, and
    # an example of those extra fields for the OpenAPI document.
    body_model: type[BaseModel] | None = None
    example_extra: dict[str, Any] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.message = message or self.message
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(self.message)


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    message = "A bearer token is required."


class InvalidToken(AppError):
    status_code = 401
    code = "invalid_token"
    message = "The bearer token is invalid."


class InsufficientScope(AppError):
    status_code = 403
    code = "insufficient_scope"
    message = "The token lacks the scope this operation needs."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "The request body exceeds the size limit."


class DatabaseUnavailable(AppError):
    status_code = 503
    code = "database_unavailable"
    message = "The database is unavailable; retry shortly."


class InvalidInput(Exception):
    """Input found invalid only against the stored data (e.g. an id that names nothing the
    request may use): rendered as a 422 in FastAPI's shape, like any other validation error.
    ``errors`` are ``{"loc", "msg", "type"}`` items."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(errors)
        self.errors = errors


class ErrorBody(BaseModel):
    """Every non-validation error."""

    detail: str = Field(
        description="A human-readable sentence.", examples=["Conversation not found."]
    )
    code: str = Field(
        description="A stable snake_case code to branch on.", examples=["conversation_not_found"]
    )


class ValidationIssue(BaseModel):
    """One validation problem: where it is, what is wrong, and its type."""

    loc: list[str | int] = Field(
        description="Where the problem is.", examples=[["body", "subject"]]
    )
    msg: str = Field(description="What is wrong.", examples=["Field required"])
    type: str = Field(description="The error type.", examples=["missing"])


class ValidationErrorBody(BaseModel):
    """FastAPI's validation error shape."""

    detail: list[ValidationIssue] = Field(description="One entry per problem.")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return Response(
        orjson.dumps({"detail": message, "code": code, **(extra or {})}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def validation_response(errors: Iterable[dict[str, Any]]) -> Response:
    detail = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]
    return Response(
        orjson.dumps({"detail": detail}), status_code=422, media_type="application/json"
    )


# SQLSTATE classes that mean "the database cannot serve us right now", not "the query is wrong":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (restart,
# pg_terminate_backend, statement timeout), 40 transaction rollback (deadlock, serialization).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# A lock wait that outlasted lock_timeout: the row is too busy right now.
LOCK_NOT_AVAILABLE = "55P03"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (SQLAlchemy's ``orig``, causes, contexts), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return chain


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc``, if any."""
    for item in _causes(exc):
        sqlstate = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(sqlstate, str):
            return sqlstate
    return None


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database is down, busy or unreachable."""
    for item in _causes(exc):
        if isinstance(item, sa_exc.TimeoutError | TimeoutError | ConnectionError | OSError):
            return True
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return True
        if type(item).__name__ in {
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "InternalClientError",
        }:
            return True
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and (
        sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate == LOCK_NOT_AVAILABLE
    )


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers, exc.extra)


# FastAPI parses a body as JSON only when it is sent as application/json (or any +json type);
# otherwise validation fails on the whole body with a message that does not say why.
_NOT_JSON = {
    "loc": ["body"],
    "msg": "The body must be JSON, sent with Content-Type: application/json.",
    "type": "content_type",
}
# What FastAPI answers (400) when it cannot parse a body: invalid UTF-8, nesting beyond the
# parser's recursion limit, an integer of more than 4300 digits. The spec wants a 422.
_BODY_PARSE_ERROR = "There was an error parsing the body"
_UNPARSABLE_JSON = {
    "loc": ["body"],
    "msg": "The body is not valid JSON (not UTF-8, nested too deeply or a number too long).",
    "type": "json_invalid",
}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return validation_response(exc.errors)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not _is_json(request.headers.get("content-type")) and any(
        tuple(err.get("loc", ())) == ("body",) and err.get("type") == "model_attributes_type"
        for err in errors
    ):
        errors = [_NOT_JSON]
    return validation_response(errors)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
        return validation_response([_UNPARSABLE_JSON])
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else "The request cannot be served."
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such endpoint."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; a path served by two routes
        # (GET and POST .../children) must list both (RFC 9110 §15.5.6).
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, code, detail, headers)


def _allowed_methods(request: Request) -> list[str]:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return []
    operations = request.app.openapi().get("paths", {}).get(path, {})
    methods = {method.upper() for method in operations if method != "parameters"}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    if is_database_unavailable(exc):
        logger.warning(
            "database unavailable: %s",
            type(exc).__name__,
            extra={"request_id": _request_id(request)},
        )
        return database_unavailable_response()
    logger.exception("unhandled error", extra={"request_id": _request_id(request)})
    return error_response(
        500,
        "internal_error",
        f"An internal error occurred; quote request id {_request_id(request)} when reporting it.",
    )


def database_unavailable_response() -> Response:
    err = DatabaseUnavailable()
    return error_response(
        err.status_code,
        err.code,
        err.message,
        {"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database failures are handled inside the exception middleware (no re-raise, no traceback
    # noise for an expected outage); anything else falls through to the server-error handler.
    # asyncpg's own errors reach here from statements run on the driver connection.
    for exc_class in (
        sa_exc.DBAPIError,
        sa_exc.TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
        TimeoutError,
    ):
        app.add_exception_handler(exc_class, _unexpected_error)
    app.add_exception_handler(Exception, _unexpected_error)


def error_responses(*errors: type[AppError], validation: bool = True) -> dict[int | str, Any]:
    """OpenAPI ``responses`` for the given errors (grouped by status)."""
    by_status: dict[int, list[type[AppError]]] = {}
    for err in errors:
        by_status.setdefault(err.status_code, []).append(err)
    responses: dict[int | str, Any] = {}
    for status, errs in sorted(by_status.items()):
        codes = ", ".join(f"`{e.code}`" for e in errs)
        # The more specific bodies first: a client tries them in order, and ErrorBody (open
        # to additional properties) would take them all.
        models: list[Any] = []
        for err in errs:
            if err.body_model is not None and err.body_model not in models:
                models.append(err.body_model)
        models.append(ErrorBody)
        model = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
        responses[status] = {
            "model": model,
            "description": f"{codes}: " + " / ".join(e.message for e in errs),
            "content": {"application/json": {"examples": _error_examples(errs)}},
        }
    if validation:
        # A 422 is FastAPI's validation shape, or ours for an AppError with status 422
        # (idempotency_key_reused): both are declared, with an example of each.
        semantic = by_status.get(422, [])
        examples = {
            "validation_error": {
                "summary": "A field is missing or invalid.",
                "value": VALIDATION_EXAMPLE,
            },
            **_error_examples(semantic),
        }
        codes = "".join(f" `{e.code}`: {e.message}" for e in semantic)
        responses[422] = {
            "model": ValidationErrorBody | ErrorBody if semantic else ValidationErrorBody,
            "description": f"The request is malformed (body, path, query or header).{codes}",
            "content": {"application/json": {"examples": examples}},
        }
    responses[500] = {
        "model": ErrorBody,
        "description": "`internal_error`: a bug. The body names the request id to report.",
        "content": {"application/json": {"example": INTERNAL_ERROR_EXAMPLE}},
    }
    return responses


VALIDATION_EXAMPLE = {
    "detail": [{"loc": ["body", "subject"], "msg": "Field required", "type": "missing"}]
}
INTERNAL_ERROR_EXAMPLE = {
    "detail": "An internal error occurred; quote request id 4f9c2a7e1b3d4c5e when reporting it.",
    "code": "internal_error",
}


def _error_examples(errors: list[type[AppError]]) -> dict[str, Any]:
    """One named example per code, so the docs page offers each in a drop-down."""
    return {
        err.code: {
            "summary": err.message,
            "value": {"detail": err.message, "code": err.code, **err.example_extra},
        }
        for err in errors
    }
