"""Application errors, and the handlers that render every error in the documented shapes.

* 422: FastAPI's shape, ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.
* everything else: an ``AppError``, rendered by ``AppError.response()`` as
  ``{"detail": "<sentence>", "code": "<snake_case>"}``.

What a database failure means is decided next to the database code (``aurion.db.errors``);
how errors are documented in OpenAPI, in ``aurion.openapi``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from aurion.db.errors import DATABASE_EXCEPTIONS, is_database_unavailable

logger = logging.getLogger("aurion.errors")

JSON = "application/json"


class AppError(Exception):
    """An error a client can act on: a status, a stable code and a human sentence."""

    status_code = 400
    code = "bad_request"
    message = "The request cannot be served."
    # Seconds after which a retry may succeed (sent as Retry-After), for transient errors.
    retry_after: int | None = None
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

    def response(self) -> Response:
        """The error as the API sends it: ``{"detail", "code"}`` (and the ``extra`` fields its
        ``body_model`` declares) with its status and headers."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers.setdefault("Retry-After", str(self.retry_after))
        return Response(
            orjson.dumps({"detail": self.message, "code": self.code, **self.extra}),
            status_code=self.status_code,
            media_type=JSON,
            headers=headers,
        )


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
    retry_after = 2


class MigrationsPending(AppError):
    status_code = 503
    code = "migrations_pending"
    message = "The database schema is not at the latest migration."


class InvalidInput(Exception):
    """Input found invalid only against the stored data (e.g. an id that names nothing the
    request may use): rendered as a 422 in FastAPI's shape, like any other validation error.
    ``errors`` are ``{"loc", "msg", "type"}`` items."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(errors)
        self.errors = errors


class InternalError(AppError):
    status_code = 500
    code = "internal_error"
    message = "An internal error occurred."

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"An internal error occurred; quote request id {request_id} when reporting it."
        )


# The codes of the errors Starlette raises itself (routing, body parsing).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class HTTPError(AppError):
    """An error Starlette raised (no such route, method not allowed, ...), in our shape."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status_code
        self.code = _HTTP_CODES.get(status_code, "http_error")


def validation_response(errors: Iterable[dict[str, Any]]) -> Response:
    """A 422 in FastAPI's shape."""
    detail = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]
    return Response(orjson.dumps({"detail": detail}), status_code=422, media_type=JSON)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return exc.response()


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
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
        return validation_response([_UNPARSABLE_JSON])
    detail = exc.detail if isinstance(exc.detail, str) else AppError.message
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such endpoint."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; a path served by two routes
        # (GET and POST .../children) must list both (RFC 9110 §15.5.6).
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return HTTPError(exc.status_code, detail, headers).response()


def _allowed_methods(request: Request) -> list[str]:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return []
    # The methods the path's operations serve (FastAPI's routes answer HEAD with 405: not listed).
    operations = request.app.openapi().get("paths", {}).get(path, {})
    return sorted(method.upper() for method in operations if method != "parameters")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    if is_database_unavailable(exc):
        logger.warning(
            "database unavailable: %s",
            type(exc).__name__,
            extra={"request_id": _request_id(request)},
        )
        return DatabaseUnavailable().response()
    logger.exception("unhandled error", extra={"request_id": _request_id(request)})
    return InternalError(_request_id(request)).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database failures are handled inside the exception middleware (no re-raise, no traceback
    # noise for an expected outage); anything else falls through to the server-error handler.
    for exc_class in DATABASE_EXCEPTIONS:
        app.add_exception_handler(exc_class, _unexpected_error)
    app.add_exception_handler(Exception, _unexpected_error)
