"""The service's OpenAPI document, from the one BentoML generates.

BentoML 1.4 declares `openapi: 3.0.2` but writes pydantic's JSON Schema 2020-12 (numeric `exclusiveMaximum`,
`type: null`), which is OpenAPI 3.1's schema dialect: standard validators reject the document. It also inlines
each single-argument request model with a non-standard `root_input` keyword and without its `null` options,
describes error bodies with `detail` as a string (the 400s carry a list), and titles the document with the
service name over BentoML's own read-me. This module declares 3.1.0, which the schemas already are, refers the
request and response bodies to the service's own pydantic models, documents the error statuses the service
answers with, and sets the title and description. tests/test_openapi.py validates the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "What was wrong with the request (4xx) or that the service failed (5xx).",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "A message naming the problem"},
        "detail": {
            "type": "array",
            "description": "One entry per invalid field of a 400: `loc` names the field, `msg` the problem",
            "items": {"type": "object"},
        },
    },
}
ERROR_STATUSES = {
    "400": "Invalid body: the message and `detail` name each invalid field",
    "415": "The body is not plain JSON (Content-Type other than application/json, or a Content-Encoding)",
    "500": "The service failed",
    "504": "Not answered within the request timeout",
}


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _component_schemas(models: Iterable[type[BaseModel]]) -> dict[str, dict]:
    schemas: dict[str, dict] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def build(generated: dict, *, title: str, description: str, version: str, models: Iterable[type[BaseModel]]) -> dict:
    """The document for a service whose API bodies are `models`, from BentoML's `generated` one."""
    document = json.loads(json.dumps(generated))  # a copy, with the status codes as JSON keys (strings)
    document["openapi"] = OPENAPI_VERSION
    document["info"] = {"title": title, "description": description, "version": version}
    models = list(models)
    by_descriptor = {f"{model.__name__}IODescriptor": model.__name__ for model in models}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in [*by_descriptor, "InvalidArgument", "NotFound", "InternalServerError"]:
        schemas.pop(name, None)
    schemas.update(_component_schemas(models))
    schemas["Error"] = ERROR_SCHEMA
    for path_item in document["paths"].values():
        operation = path_item.get("post")
        if operation is None:
            continue
        for media in _walk([operation["requestBody"], operation["responses"]["200"]]):
            schema = media.get("schema")
            if isinstance(schema, dict) and schema.get("title") in by_descriptor:
                media["schema"] = {"$ref": SCHEMAS + by_descriptor[schema["title"]]}
        operation["responses"] = {
            "200": operation["responses"]["200"],
            **{
                status: {
                    "description": meaning,
                    "content": {"application/json": {"schema": {"$ref": SCHEMAS + "Error"}}},
                }
                for status, meaning in ERROR_STATUSES.items()
            },
        }
    for node in _walk(document):
        node.pop("root_input", None)
    return document
