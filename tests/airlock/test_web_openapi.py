"""The airlock API's OpenAPI 3 document: complete both ways, valid, served."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate
from tornado import web

from ecluse.airlock.web.api import APIHandler, api_handlers
from ecluse.airlock.web.openapi import build_spec, openapi_path

PREFIX = "/services/airlock/"
BASE = "/services/airlock/api/v1"
METHODS = ("get", "post", "put", "patch", "delete")


def _routes() -> list[tuple]:
    return api_handlers(PREFIX)


def _implemented(handler: type) -> set[str]:
    """The HTTP methods a handler class answers (not tornado's 405 defaults)."""
    return {m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}


def undocumented(routes: list[tuple], doc: dict[str, Any]) -> list[str]:
    """Routes and methods of the app the document does not describe."""
    missing = []
    for route in routes:
        pattern, handler = route[0], route[1]
        if getattr(handler, "openapi_hidden", False):
            continue
        path, _ = openapi_path(pattern, BASE)
        for method in sorted(_implemented(handler)):
            if method not in doc["paths"].get(path, {}):
                missing.append(f"{method.upper()} {path}")
    return missing


def _samples(path: str, parameters: list[dict[str, Any]]) -> list[str]:
    """Concrete URLs of a documented path: each enum value, a value matching each pattern."""
    urls = [path]
    for p in parameters:
        schema = p["schema"]
        values = schema.get("enum") or [
            next(v for v in ("r-1", "7") if re.fullmatch(schema["pattern"], v))
        ]
        urls = [u.replace("{" + p["name"] + "}", v) for u in urls for v in values]
    return [BASE + u for u in urls]


def unserved(routes: list[tuple], doc: dict[str, Any]) -> list[str]:
    """Documented paths and methods no route of the app answers (tornado's first match)."""
    missing = []
    for path, item in doc["paths"].items():
        for url in _samples(path, item.get("parameters", [])):
            handler = next((r[1] for r in routes if re.fullmatch(r[0], url)), None)
            for method in (m for m in item if m in METHODS):
                if (handler is None or getattr(handler, "openapi_hidden", False)
                        or method not in _implemented(handler)):
                    missing.append(f"{method.upper()} {url}")
    return missing


def test_every_route_is_documented_and_every_documented_route_exists():
    routes = _routes()
    doc = routes[0][2]["document"]
    assert undocumented(routes, doc) == []
    assert unserved(routes, doc) == []
    # every API route but the catch-all is in it
    assert len(doc["paths"]) == sum(1 for r in routes if not getattr(r[1], "openapi_hidden", 0))


def test_the_checks_catch_a_missing_route_or_operation():
    """The two checks above fail when either side is missing (what the first test relies on)."""

    class Undocumented(APIHandler):
        async def get(self) -> None:  # pragma: no cover - never served
            pass

    class DocumentedOnly(APIHandler):
        openapi = {"get": {"summary": "x", "responses": {"200": {"description": "x"}}},
                   "delete": {"summary": "y", "responses": {"204": {"description": "y"}}}}

        async def get(self) -> None:  # pragma: no cover - never served
            pass

    routes = _routes()
    extra = [(BASE + r"/extra", Undocumented), (BASE + r"/only", DocumentedOnly)]
    doc = build_spec([*extra, *routes], BASE)
    assert undocumented([*extra, *routes], doc) == ["GET /extra"]
    # documented but not served: a DELETE the handler lacks, and a path without its route
    assert unserved([*extra, *routes], doc) == ["DELETE /services/airlock/api/v1/only"]
    assert unserved(routes, doc) == ["GET /services/airlock/api/v1/only",
                                     "DELETE /services/airlock/api/v1/only"]


def test_the_document_is_valid_openapi_3_with_the_error_shape():
    doc = _routes()[0][2]["document"]
    validate(doc)  # raises on an invalid document
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": BASE}]
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "status", "message"]
    for path, item in doc["paths"].items():
        for method, op in ((m, o) for m, o in item.items() if m in METHODS):
            assert op["summary"], (method, path)
            if path == "/openapi.json":
                assert op["security"] == []
                continue
            for status in ("401", "403"):  # every signed-in operation can answer them
                body = op["responses"][status]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Error"}, (method, path)
    review = doc["paths"]["/requests/{request_id}/reviews"]["post"]
    assert review["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Review"}
    action = doc["paths"]["/requests/{request_id}/{action}"]["parameters"]
    assert {p["name"]: p["schema"].get("enum") for p in action} == {
        "request_id": None, "action": ["submit", "resubmit", "withdraw", "release",
                                            "release_partial"]}


@pytest.mark.timeout(180)
def test_the_document_is_served_without_signing_in(airlock_hub):
    url = f"{airlock_hub.airlock_url}/api/v1/openapi.json"
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    validate(doc)
    assert doc["info"]["title"] == "Écluse airlock API"
    assert "/requests/{request_id}/reviews" in doc["paths"]
    # the rest of the API still wants a sign-in
    assert requests.get(f"{airlock_hub.airlock_url}/api/v1/me", timeout=10).status_code == 401
