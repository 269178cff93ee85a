"""LeanRoute: FastAPI's request handler with a fast path for the valid request of a hot route.

FastAPI's generic handler (``fastapi.routing.get_request_handler``) solves a route's dependency
tree on every request: for each dependant, path, query, header and cookie parameters (parsing
the cookies even when no parameter reads one), a dependency cache, a Response for headers set by
dependencies, the content type parsed with ``email.message``, telemetry hooks. On the hot routes
that is about a third of the app's CPU per request (bench/inprocess.py).

A hot route's shape is simple: parameters, one JSON body, and sub-dependencies that take the
request alone (BearerScope). For such a route the fast path below does only this:

1. validate the endpoint's parameters and body with FastAPI's own functions on the route's own
   ``dependant``: ``request_body_to_args``, and for parameters ``request_params_to_args``
   with what it re-derives on every request (is the field a model, a sequence, under which
   key) derived once per route (``_params_reader``: 33 -> 5 µs a request for the child
   route's path and headers, measured). A body that is one model (every hot route's) is
   validated from its bytes by the field's own pydantic adapter (``validate_json``: parsed
   and validated in one pass, 7.7 -> 5.0 µs for a plain child's body, measured) instead of
   ``json.loads`` and then ``request_body_to_args``;
2. call each sub-dependency with the request, then the endpoint, and return its Response.

Everything else is FastAPI's normal handler, run from the start on the same request (the body
read is cached on it): any validation error (it builds the 422 and runs the dependencies first,
so a 401 still beats a 422), a body that is not sent as exactly ``application/json`` or does not
parse, dependency overrides, active FastAPI telemetry. Validation has no side effects, so running
it before the dependencies on the fast path cannot be told apart from FastAPI's order. A route
whose shape does not fit (see ``_fits``) gets the normal handler only.
tests/conversations/test_lean_route.py sends every kind of request to an app with LeanRoute and to
one with FastAPI's APIRoute and compares the answers byte for byte.

Measured (bench/inprocess.py --client asgi, 5 interleaved rounds, Python µs per request, before ->
after): child 712 -> 623, batch 826 -> 772, get 478 -> 421, list 582 -> 532, create 681 -> 609.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from fastapi._compat import ModelField, Undefined, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    _get_form_models,
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _should_embed_body_fields,
    _validate_value_with_model_field,
    request_body_to_args,
    request_params_to_args,
)
from fastapi.params import Form, Param
from fastapi.routing import APIRoute, _effective_route_context_var
from fastapi.telemetry._api import _get_request_telemetry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# The one content type the fast path parses; any other is left to FastAPI's own parsing.
_JSON = "application/json"


def _takes_request_only(dependant: Dependant) -> bool:
    """A dependant whose only input is the Request (no parameters, no sub-dependencies)."""
    return (
        dependant.request_param_name is not None
        and not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
    )


def _is_async_function(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 (a dependency instance: async __call__)
    )


def _returns_response(call: Any) -> bool:
    try:
        returned = typing.get_type_hints(call).get("return")
    except Exception:
        return False
    return isinstance(returned, type) and issubclass(returned, Response)


def _fits(route: Any) -> bool:
    """Whether the fast path gives exactly what FastAPI's handler gives for this route."""
    dependant: Dependant = route.dependant
    subs = dependant.dependencies
    return (
        inspect.iscoroutinefunction(dependant.call)
        and _returns_response(dependant.call)  # returned as is: no response_model work
        and dependant.request_param_name is not None
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
        and not (route.body_field and isinstance(route.body_field.field_info, Form))
        and not route.is_sse_stream
        and not route.is_json_stream
        and all(
            _takes_request_only(sub)
            and sub.name is not None
            and sub.concurrency is None
            and _is_async_function(sub.call)
            for sub in subs
        )
        # Distinct calls: FastAPI would call a repeated dependency once (its cache).
        and len({id(sub.call) for sub in subs}) == len(subs)
    )


# How to read one parameter: the field, the request's key for it, the location of its errors.
_Reading = tuple[ModelField, str, tuple[str, str]]


def _params_reader(
    fields: list[ModelField],
) -> Callable[[Any], tuple[dict[str, Any], list[Any]]]:
    """``request_params_to_args`` for these fields, with what it works out on every request
    (is it a model? a sequence? which key?) worked out once: for fields of one plain value
    under one name, it does only the look-up and ``_validate_value_with_model_field``, as
    FastAPI does for such a field. Any other field: FastAPI's function itself."""
    readings: list[_Reading] = []
    for field in fields:
        aliases = _get_param_aliases(field)
        info = field.field_info
        if (
            _get_param_model(field) is not None
            or (not _is_json_field(field) and field_annotation_is_sequence(info.annotation))
            or len(aliases) != 1
            or not isinstance(info, Param)
        ):
            return partial(request_params_to_args, fields)
        key = aliases[0][1]
        readings.append((field, key, (info.in_.value, key)))

    def read(received: Any) -> tuple[dict[str, Any], list[Any]]:
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for field, key, loc in readings:
            value = received.get(key)
            found, failed = _validate_value_with_model_field(
                field=field,
                value=Undefined if value is None else value,
                values=values,
                loc=loc,
            )
            if failed:
                errors.extend(failed)
            else:
                values[field.name] = found
        return values, errors

    return read


def _json_body_validator(
    body_params: list[ModelField], embed_body_fields: bool
) -> tuple[str, Callable[[bytes], Any]] | None:
    """For a route whose body is one model, not embedded (the body IS the model): the
    parameter's name and its validator straight from the JSON bytes (pydantic-core parses and
    validates in one pass, where ``request.json()`` then ``request_body_to_args`` build the
    Python objects first and validate them after). None for any other body."""
    if len(body_params) != 1 or embed_body_fields or _should_embed_body_fields(body_params):
        return None
    field = body_params[0]
    adapter = getattr(field, "_type_adapter", None)
    if _get_form_models(field) or _is_json_field(field) or adapter is None:
        return None
    return field.name, adapter.validate_json


def _raising_receive(error: Exception) -> Callable[[], Awaitable[Message]]:
    async def receive() -> Message:
        raise error

    return receive


class LeanRoute(APIRoute):
    """An APIRoute whose handler takes a fast path for a valid request (module docstring)."""

    # False: FastAPI's handler only (the equivalence test builds an app each way).
    lean = True

    def get_route_handler(self) -> Handler:
        normal = super().get_route_handler()
        # As APIRoute.get_route_handler: an included route's handler is built for the route as
        # the include made it (its dependant, its overrides provider).
        route: Any = self
        effective = _effective_route_context_var.get()
        if effective is not None and effective.original_route is self:
            route = effective
        if not self.lean or not _fits(route):
            return normal

        dependant: Dependant = route.dependant
        endpoint = dependant.call
        assert endpoint is not None
        request_name = dependant.request_param_name
        assert request_name is not None
        # (values' key, the dependency, its request parameter's name): all set, by _fits.
        subs: list[tuple[str, Callable[..., Awaitable[Any]], str]] = [
            (sub.name, sub.call, sub.request_param_name)  # type: ignore[misc]
            for sub in dependant.dependencies
        ]
        path_params = dependant.path_params
        query_params = dependant.query_params
        header_params = dependant.header_params
        cookie_params = dependant.cookie_params
        readers = [
            (_params_reader(fields), source) for fields, source in (
                (path_params, "path_params"),
                (query_params, "query_params"),
                (header_params, "headers"),
                (cookie_params, "cookies"),
            ) if fields
        ]  # fmt: skip
        body_params = dependant.body_params
        embed_body_fields = route._embed_body_fields
        json_body = _json_body_validator(body_params, embed_body_fields) if body_params else None
        overrides_provider = route.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if (
                overrides_provider is not None
                and getattr(overrides_provider, "dependency_overrides", None)
            ) or _get_request_telemetry() is not None:
                return await normal(request)
            values: dict[str, Any] = {}
            errors: list[Any] = []
            for read, source in readers:
                found, failed = read(getattr(request, source))
                values.update(found)
                errors += failed
            if body_params:
                try:
                    body = await request.body()
                except Exception as exc:
                    # FastAPI's handler reads the body first and maps the failure (400, 413,
                    # ...): give it a request whose read fails the same way.
                    return await normal(Request(request.scope, _raising_receive(exc)))
                if not body or request.headers.get("content-type") != _JSON:
                    return await normal(request)
                if json_body is not None:
                    name, validate_json = json_body
                    try:
                        values[name] = validate_json(body)
                    except Exception:  # invalid, or not JSON: FastAPI's handler answers
                        return await normal(request)
                else:
                    try:
                        received_body = await request.json()
                    except Exception:  # FastAPI's handler parses it again and answers
                        return await normal(request)
                    found, failed = await request_body_to_args(
                        body_params, received_body, embed_body_fields
                    )
                    values.update(found)
                    errors += failed
            if errors:  # FastAPI's handler builds the 422, after the dependencies as always
                return await normal(request)
            for name, call, sub_request_name in subs:
                values[name] = await call(**{sub_request_name: request})
            values[request_name] = request
            response: Response = await endpoint(**values)
            return response

        return handler
