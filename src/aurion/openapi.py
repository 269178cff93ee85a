"""How errors are documented in OpenAPI: the bodies' schemas and each operation's ``responses``.

Routes list the ``AppError`` classes they can raise; the status, code and message of each come
from the class, so the document cannot disagree with what is sent.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, Field

from aurion.errors import AppError, InternalError


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


VALIDATION_EXAMPLE = {
    "detail": [{"loc": ["body", "subject"], "msg": "Field required", "type": "missing"}]
}
_INTERNAL_ERROR = InternalError("4f9c2a7e1b3d4c5e")
INTERNAL_ERROR_EXAMPLE = {"detail": _INTERNAL_ERROR.message, "code": _INTERNAL_ERROR.code}


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
    responses[InternalError.status_code] = {
        "model": ErrorBody,
        "description": f"`{InternalError.code}`: a bug. The body names the request id to report.",
        "content": {"application/json": {"example": INTERNAL_ERROR_EXAMPLE}},
    }
    return responses


def _error_examples(errors: list[type[AppError]]) -> dict[str, Any]:
    """One named example per code, so the docs page offers each in a drop-down."""
    return {
        err.code: {
            "summary": err.message,
            "value": {"detail": err.message, "code": err.code, **err.example_extra},
        }
        for err in errors
    }
