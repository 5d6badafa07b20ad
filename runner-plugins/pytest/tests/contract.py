"""Checks a request and a reply against the OpenAPI document: the route, its parameters, its bodies."""

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

import httpx
from jsonschema import Draft202012Validator

Document = Mapping[str, Any]


def validate(document: Document, schema: Mapping[str, Any], value: Any, what: str) -> None:
    """Validates against a schema of the document (its ``#/components/...`` references resolve)."""
    rooted = {**schema, "components": document["components"]}
    errors = sorted(Draft202012Validator(rooted).iter_errors(value), key=str)
    assert not errors, f"{what}: {[e.message for e in errors]}"


def find_operation(document: Document, method: str, path: str) -> Tuple[str, Dict[str, Any], Dict[str, str]]:
    """The operation (its id, its object and the path parameters) a request goes to."""
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        match = re.match(pattern, path)
        if match and method.lower() in item:
            operation = item[method.lower()]
            return operation["operationId"], operation, {k: unquote(v) for k, v in match.groupdict().items()}
    raise AssertionError(f"{method} {path} is no route of the OpenAPI document")


def _typed(schema: Mapping[str, Any], raw: str) -> Any:
    return int(raw) if schema.get("type") == "integer" else raw


def check_request(document: Document, request: httpx.Request) -> Tuple[str, Dict[str, Any]]:
    """Asserts the request fits its route; returns the operation id and the operation."""
    op_id, operation, path_params = find_operation(document, request.method, request.url.path)
    declared = {p["name"]: p for p in operation.get("parameters", [])}
    query = dict(request.url.params.multi_items())
    for name, value in {**path_params, **query}.items():
        assert name in declared, f"{op_id}: parameter {name} is not in the document"
        validate(document, declared[name]["schema"], _typed(declared[name]["schema"], value), f"{op_id} {name}")
    for name, parameter in declared.items():
        if parameter.get("required"):
            assert name in path_params or name in query, f"{op_id}: required parameter {name} is missing"
    content = operation.get("requestBody", {}).get("content", {})
    body = request.content
    if "application/json" in content and body:
        assert request.headers["content-type"] == "application/json", op_id
        validate(document, content["application/json"]["schema"], json.loads(body), f"{op_id} request body")
    elif "application/octet-stream" in content:
        assert request.headers["content-type"] == "application/octet-stream", op_id
    else:
        assert not body, f"{op_id} takes no body"
    return op_id, operation


def reply(document: Document, operation: Mapping[str, Any], op_id: str, status: int, body: Any) -> httpx.Response:
    """A reply with ``body``, after checking the document declares it for ``status``."""
    declared = operation["responses"].get(str(status))
    assert declared is not None, f"{op_id} declares no {status} reply"
    content = declared.get("content", {})
    if body is None:
        assert not content, f"{op_id} {status} has a body"
        return httpx.Response(status)
    if isinstance(body, bytes):
        assert "application/octet-stream" in content, f"{op_id} {status} is not raw bytes"
        return httpx.Response(status, content=body)
    if isinstance(body, str):
        assert "text/plain" in content, f"{op_id} {status} is not text"
        return httpx.Response(status, text=body)
    validate(document, content["application/json"]["schema"], body, f"{op_id} {status} reply")
    return httpx.Response(status, json=body)


class ContractTransport(httpx.BaseTransport):
    """Answers each request with the sample reply of its operation; both checked against the document."""

    def __init__(self, document: Document, replies: Mapping[str, Tuple[int, Any]]) -> None:
        self.document = document
        self.replies = replies
        self.calls: List[str] = []
        self.last: Optional[httpx.Request] = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        op_id, operation = check_request(self.document, request)
        self.calls.append(op_id)
        self.last = request
        status, body = self.replies[op_id]
        return reply(self.document, operation, op_id, status, body)
