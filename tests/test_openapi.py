"""The OpenAPI document: committed, in step with the code, and good enough to generate clients.

Generated clients read the operationIds, the schemas and the declared errors; a reader of the
docs page reads the descriptions and examples. These tests keep all of that from regressing.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest

from aurion.app import openapi_document
from tests.support import ROOT

OPENAPI_JSON = ROOT / "openapi.json"
OPERATIONS = {
    ("post", "/api/v2/conversations/{conversation_id}/children"): "createChildConversation",
    ("post", "/api/v2/conversations/{conversation_id}/children/batch"): (
        "createChildConversationsBatch"
    ),
    ("post", "/api/v2/conversations"): "createConversation",
    ("get", "/api/v2/conversations/{conversation_id}"): "getConversation",
    ("get", "/api/v2/conversations/{conversation_id}/children"): "listChildConversations",
    ("get", "/api/v2/events"): "listEvents",
    ("post", "/api/v2/webhooks"): "createWebhook",
    ("get", "/api/v2/webhooks"): "listWebhooks",
    ("delete", "/api/v2/webhooks/{webhook_id}"): "deleteWebhook",
    ("get", "/api/v2/webhooks/{webhook_id}/deliveries"): "listWebhookDeliveries",
    ("patch", "/api/v2/conversations/{conversation_id}"): "updateConversation",
    ("delete", "/api/v2/conversations/{conversation_id}"): "deleteConversation",
    ("put", "/api/v2/conversations/{conversation_id}/parent"): "setConversationParent",
    ("get", "/api/v2/conversations/{conversation_id}/activities"): "listConversationActivities",
}
TAGS = {"conversations", "events", "webhooks"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(openapi_document())
    return parsed


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def test_committed_openapi_json_matches_the_code() -> None:
    expected = openapi_document()
    committed = OPENAPI_JSON.read_text(encoding="utf-8") if OPENAPI_JSON.exists() else ""
    if committed != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    "openapi.json (committed)",
                    "openapi.json (from the code)",
                    n=2,
                )
            )[:60]
        )
        pytest.fail(f"openapi.json is out of date: run make openapi and commit it.\n{diff}")


def test_operation_ids_are_stable(document: dict[str, Any]) -> None:
    found = {(m, p): op.get("operationId") for m, p, op in operations(document)}
    assert found == OPERATIONS


def test_every_operation_has_a_summary_a_description_and_the_bearer_scheme(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT"
    assert scheme["description"]
    for _, _, op in operations(document):
        assert op["summary"], op["operationId"]
        assert len(op["description"]) > 40, op["operationId"]
        assert op["security"] == [{"HTTPBearer": []}], op["operationId"]
        assert len(op["tags"]) == 1, op["operationId"]
        assert op["tags"][0] in TAGS, op["operationId"]


def test_every_parameter_has_a_description_and_an_example(document: dict[str, Any]) -> None:
    for _, _, op in operations(document):
        for param in op.get("parameters", []):
            where = f"{op['operationId']} {param['in']} {param['name']}"
            assert param.get("description"), where
            schema = param["schema"]
            assert param.get("examples") or schema.get("examples") or "example" in schema, where


def test_every_error_is_declared_with_its_schema_and_an_example(document: dict[str, Any]) -> None:
    for _, _, op in operations(document):
        responses = op["responses"]
        # What every authenticated operation can answer besides its own refusals.
        assert {"401", "403", "422", "500", "503"} <= set(responses), op["operationId"]
        for status, response in responses.items():
            where = f"{op['operationId']} {status}"
            assert response.get("description"), where
            if status == "204":
                assert "content" not in response, f"{where}: a 204 has no body"
                continue
            media = response["content"]["application/json"]
            assert "schema" in media, where
            if int(status) < 400:
                continue
            examples = media.get("examples") or {"example": {"value": media.get("example")}}
            assert examples, where
            schemas = [resolve(document, s) for s in media["schema"].get("anyOf", [])] or [
                resolve(document, media["schema"])
            ]
            allowed = {tuple(sorted(s["required"])) for s in schemas}
            for name, example in examples.items():
                value = example["value"]
                assert tuple(sorted(value)) in allowed, f"{where} example {name}"
                if isinstance(value["detail"], str):
                    # The code is named in the response's description, for readers.
                    assert f"`{value['code']}`" in response["description"], f"{where} {name}"


def test_every_success_response_describes_its_headers(document: dict[str, Any]) -> None:
    created = document["paths"]["/api/v2/conversations/{conversation_id}/children"]["post"]
    headers = created["responses"]["201"]["headers"]
    assert set(headers) >= {"Location", "ETag"}
    for header in headers.values():
        assert header["description"]


def test_every_schema_and_field_is_described_with_an_example(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("description"), name
        for field, prop in schema.get("properties", {}).items():
            where = f"{name}.{field}"
            assert prop.get("description"), where
            # A field holding other schemas takes its example from theirs.
            holds_schema = "$ref" in prop or "$ref" in prop.get("items", {})
            assert holds_schema or "examples" in prop or "example" in prop, where


def test_the_body_of_create_child_is_closed_and_exemplified(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["ChildConversationCreate"]
    assert body["additionalProperties"] is False
    assert body["required"] == ["subject"]
    assert body["properties"]["subject"]["examples"] == ["Refund the duplicate charge"]


def test_try_it_out_starts_from_bodies_that_work_on_any_parent(document: dict[str, Any]) -> None:
    # Swagger UI fills the body with the first example: it must not copy a message id that no
    # parent has (an example assembled from every field's example would).
    for path in ("/children", "/children/batch"):
        operation = document["paths"]["/api/v2/conversations/{conversation_id}" + path]["post"]
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        first = next(iter(examples.values()))["value"]
        bodies = first.get("children", [first])
        assert all("copy_message_ids" not in body for body in bodies)
        assert all(body["subject"] for body in bodies)
