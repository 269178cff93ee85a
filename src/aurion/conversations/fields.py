"""Field types of the conversations API's schemas: what input is accepted, and how a field
is documented.

Inputs refuse what PostgreSQL cannot store (NUL, lone surrogates, non-finite numbers), so
malformed input is a 422 and never reaches the database as a 500.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
)

Status = Literal["new", "open", "pending", "on_hold", "resolved", "closed"]
Priority = Literal["low", "medium", "high", "urgent"]

_LABEL_FORBIDDEN = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
MAX_JSON_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
# orjson (responses) and asyncpg (jsonb) take 64-bit integers; jsonb prints 1e20 as
# 100000000000000000000, which reads back as an integer: floats keep to the same range.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _no_control(value: str) -> str:
    if _LABEL_FORBIDDEN.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_binary(value: str) -> str:
    if _TEXT_FORBIDDEN.search(value):
        raise ValueError("must not contain NUL or control characters other than tab and newline")
    return value


def _storable(value: str) -> str:
    # Free-form JSON keeps any text PostgreSQL can store: only NUL and lone surrogates are out.
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL or unpaired surrogates")
    return value


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or infinite numbers")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("contains a number out of range (at most ±9.2e18)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("contains an integer out of the 64-bit range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # anything orjson cannot encode is a client error, not a 500
        raise ValueError(f"is not storable JSON: {exc}") from None
    if len(encoded) > MAX_JSON_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_BYTES} bytes as JSON")
    return value


# The same rules as JSON Schema patterns, so the OpenAPI document (and clients or fuzzers
# generating from it) knows them; the validators above give the friendlier message.
_LABEL_PATTERN = Field(json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f]*$"})
_SUBJECT_PATTERN = Field(
    json_schema_extra={
        "pattern": "^[^\\u0000-\\u001f\\u007f]*"
        "[^\\s\\u0000-\\u001f\\u007f][^\\u0000-\\u001f\\u007f]*$"
    }
)
_TEXT_PATTERN = Field(
    json_schema_extra={"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"}
)


def _json_text_only(value: Any) -> Any:
    # A time is an ISO 8601 string, as the schema says: lax parsing would take 0 as 1970.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


Label = Annotated[
    str, StringConstraints(max_length=255), AfterValidator(_no_control), _LABEL_PATTERN
]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_no_control),
    _LABEL_PATTERN,
]
Subject = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_no_control),
    _SUBJECT_PATTERN,
]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
MessageBody = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64 * 1024),
    AfterValidator(_no_binary),
    _TEXT_PATTERN,
]
Html = Annotated[
    str, StringConstraints(max_length=64 * 1024), AfterValidator(_no_binary), _TEXT_PATTERN
]


def _in_utc_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _json_integer(value: Any) -> Any:
    # JSON has one number type: 5.0 is the integer 5 (JSON Schema agrees); "5" and true are not.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_json_text_only), AfterValidator(_in_utc_range)
]
EffortMinutes = Annotated[int, Field(ge=0, le=10_000_000), BeforeValidator(_json_integer)]

TIME_EXAMPLE = "2019-08-24T14:15:22Z"
UUID_EXAMPLE = "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70"


_NO_EXAMPLE: Any = object()


def documented(description: str, example: Any = _NO_EXAMPLE, **kwargs: Any) -> Any:
    """A field with its OpenAPI description and one example (an explicit None is a real
    example: the field is usually null); other ``Field`` arguments pass through.

    An empty list or object default is made by a factory: pydantic deep-copies a mutable
    default for every model it validates (``copy.deepcopy``: three of them were half of
    validating a child's body, 5.0 -> 2.4 µs), where ``list()`` is a new empty one at once.
    The schema still shows the default."""
    examples = None if example is _NO_EXAMPLE else [example]
    default = kwargs.get("default")
    if type(default) in (list, dict) and not default:
        del kwargs["default"]
        kwargs["default_factory"] = type(default)
        kwargs["json_schema_extra"] = {
            "default": default,
            **(kwargs.get("json_schema_extra") or {}),
        }
    return Field(description=description, examples=examples, **kwargs)
