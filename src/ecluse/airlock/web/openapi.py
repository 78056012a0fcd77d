"""The airlock API's OpenAPI 3 document, built from the route table with ``apispec``.

One source: :func:`build_spec` walks the API's routes (``api_handlers``), turns each
URL pattern into an OpenAPI path (``(?P<request_id>...)`` becomes ``{request_id}``,
with the group's pattern as the parameter's schema) and takes each operation from the
``openapi`` attribute of the route's handler class (``{"get": {...}, "post": {...}}``).
A route whose handler has no ``openapi`` operations is left out only when the handler
says so (``openapi_hidden``); ``tests/airlock/test_web_openapi.py`` checks that every
route and method is documented and that every documented path and method is served.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from apispec import APISpec

from ..background import CHECKING
from ..errors import AirlockError
from ..rules import DECISIONS, State, Verdict

__all__ = ["API_TITLE", "SCHEMAS", "build_spec", "openapi_path", "errors", "json_body", "ok"]

API_TITLE = "Écluse airlock API"
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<pattern>[^()]*)\)")

_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": "string", "format": "date-time", "nullable": True}

#: component schemas (``#/components/schemas/<name>``)
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Machine-readable code, e.g. "
                             "invalid_input, permission_denied, invalid_state."},
                    "status": {"type": "integer", "description": "The HTTP status."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                },
            }
        },
    },
    "Me": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "projects": {"type": "array", "items": {"type": "string"}},
            "output_checker": {"type": "boolean"},
            "staff": {"type": "boolean"},
        },
    },
    "Rules": {
        "type": "object",
        "description": "The request state machine as data.",
        "properties": {
            "states": {"type": "array", "items": {"type": "string"}},
            "final_states": {"type": "array", "items": {"type": "string"}},
            "transitions": {"type": "array", "items": {"type": "object"}},
            "verdicts": {"type": "object", "additionalProperties": {"type": "object"}},
            "required_approvals": {"type": "integer"},
            "file_access": {"type": "array", "items": {"type": "object"}},
        },
    },
    "DryRun": {
        "type": "object",
        "description": "A check before export (POST /check): nothing was kept.",
        "properties": {
            "project": {"type": "string"},
            "kept": {"type": "boolean", "description": "Always false."},
            "files": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "size": {"type": "integer"},
                "sha256": {"type": "string"},
                "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
                "format": {"type": "string", "nullable": True},
                "findings": {"type": "array", "items": {"type": "object"},
                             "description": "rule, severity, message, location (row, "
                             "column, cell)"},
                "preview": {"type": "object", "description": "As a request's file: kind, "
                            "columns, rows, flagged [row, column] cells."},
                "proposal": {"type": "object", "description": "For a fail table: the fix "
                             "the airlock would propose (method, notes or error)."},
            }}},
        },
    },
    "NewRequest": {
        "type": "object",
        "required": ["project", "title"],
        "additionalProperties": False,
        "properties": {
            "project": {"type": "string", "description": "Slug of a project you are in."},
            "title": {"type": "string"},
            "justification": {"type": "string"},
        },
    },
    "RequestSummary": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "project": {"type": "string"},
            "requester": {"type": "string"},
            "title": {"type": "string"},
            "state": {"type": "string", "enum": [v.value for v in State]},
            "version": {"type": "integer"},
            "approvals": {"type": "integer"},
            "required_approvals": {"type": "integer"},
            "created_at": _TS,
            "updated_at": _TS,
            "submitted_at": _TS_OR_NULL,
            "released_at": _TS_OR_NULL,
        },
    },
    "RequestList": {
        "type": "object",
        "properties": {"requests": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/RequestSummary"}}},
    },
    "File": {
        "type": "object",
        "description": "A file as the caller may see it: findings, report and preview only "
        "where the caller's role and the request's state allow.",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "sha256": {"type": "string"},
            "size": {"type": "integer"},
            "verdict": {"type": "string", "enum": [*(v.value for v in Verdict), CHECKING],
                        "description": "`checking`: stored, its check not finished yet "
                        "(the request cannot be submitted until every file has its "
                        "verdict)."},
            "format": {"type": "string"},
            "needs_override_reason": {"type": "boolean"},
            "downloadable": {"type": "boolean"},
            "uploaded_by": {"type": "string"},
            "created_at": _TS,
            "supporting": {"type": "boolean", "description": "A supporting file: seen by the "
                           "checkers, never released."},
            "context": {"type": "string", "description": "What the output is (researcher)."},
            "controls": {"type": "string", "description": "The statistical disclosure "
                         "controls applied (researcher)."},
            "needs_context": {"type": "boolean", "description": "A fail/review file to release "
                              "without its context and controls: submission is refused."},
            "findings": {"type": "array", "items": {"type": "object"}},
            "report": {"type": "object"},
            "preview": {"type": "object"},
            "proposal": {"type": "object"},
        },
    },
    "Request": {
        "allOf": [
            {"$ref": "#/components/schemas/RequestSummary"},
            {
                "type": "object",
                "properties": {
                    "justification": {"type": "string"},
                    "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
                    "versions": {"type": "object", "additionalProperties": {
                        "type": "array", "items": {"$ref": "#/components/schemas/File"}}},
                    "purged_at": _TS_OR_NULL,
                    "reviews": {"type": "array", "items": {"type": "object"}},
                    "history": {"type": "array", "items": {"type": "object"}},
                    "your_roles": {"type": "array", "items": {"type": "string"}},
                    "allowed_actions": {"type": "array", "items": {"type": "string"}},
                },
            },
        ]
    },
    "ReleaseRecord": {
        "type": "object",
        "description": "What was released and why: policy, tool version, per-file verdicts "
        "and findings, each reviewer's decision and override reasons, comments, timestamps, "
        "sha256 of every file (see docs/airlock.md).",
        "additionalProperties": True,
    },
    "FileDescription": {
        "type": "object",
        "additionalProperties": False,
        "description": "Fields left out stay as they are; an empty string clears a text.",
        "properties": {
            "context": {"type": "string", "description": "What the output is, how it was "
                        "made, what each number counts."},
            "controls": {"type": "string", "description": "The statistical disclosure "
                         "controls applied: rounding, suppression, thresholds."},
            "supporting": {"type": "boolean", "description": "A supporting file (e.g. the "
                           "unrounded counts behind a rounded table): checkers see it, the "
                           "checks use it, it is never released."},
        },
    },
    "Comment": {
        "type": "object",
        "properties": {"comment": {"type": "string"}},
    },
    "Review": {
        "type": "object",
        "required": ["decision"],
        "properties": {
            "decision": {"type": "string", "enum": list(DECISIONS)},
            "comment": {"type": "string"},
            "overrides": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "File name → the reason for approving a file whose "
                          "verdict needs one."},
        },
    },
    "FileDecision": {
        "type": "object",
        "required": ["decision"],
        "properties": {
            "decision": {"type": "string", "enum": ["approve", "request_changes"]},
            "comment": {"type": "string", "description": "Required to request changes, and "
                        "to approve a file whose verdict needs an override reason."},
        },
    },
    "Comparison": {
        "type": "object",
        "description": "Two versions of a request compared from their previews: per file "
        "its status (added, removed, unchanged, changed), both sides (previews as you may "
        "see them) and, for two tables, the rows and cells changed, added and removed.",
        "properties": {
            "request": {"$ref": "#/components/schemas/RequestSummary"},
            "from": {"type": "integer"}, "to": {"type": "integer"},
            "files": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Proposal": {
        "type": "object",
        "description": "The fixed version proposed for a failing table (or why there is none).",
        "properties": {
            "text": {"type": "string"}, "notes": {"type": "array", "items": {"type": "string"}},
            "method": {"type": "string"}, "verdict": {"type": "string"},
            "error": {"type": "string"},
        },
    },
}

#: the statuses of the service's errors, with their codes (for the error responses)
_STATUS_CODES: dict[int, list[str]] = {}


def _error_codes() -> dict[int, list[str]]:
    if not _STATUS_CODES:
        todo: list[type] = [AirlockError]
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            if cls is not AirlockError:
                _STATUS_CODES.setdefault(cls.status, []).append(cls.code)
    return _STATUS_CODES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(schema: str | None, description: str, status: int = 200,
       media: str = "application/json") -> dict[str, Any]:
    """A success response (``schema`` None: no body)."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        body = {"type": "string", "format": "binary"} if schema == "binary" else _ref(schema)
        response["content"] = {media: {"schema": body}}
    return {str(status): response}


def errors(*statuses: int) -> dict[str, Any]:
    """Error responses of the service's shape; 401 and 403 are on every operation."""
    out: dict[str, Any] = {}
    for status in sorted({401, 403, *statuses}):
        codes = ", ".join(sorted(_error_codes().get(status, []))) or "http_error"
        out[str(status)] = {
            "description": f"Error ({codes}).",
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return out


def json_body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def openapi_path(pattern: str, base: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The OpenAPI path of a route's URL pattern below ``base`` and its path parameters."""
    if not pattern.startswith(base):
        return None
    tail = pattern[len(base):]
    params: list[dict[str, Any]] = []

    def param(m: re.Match[str]) -> str:
        name, regex = m["name"], m["pattern"]
        schema: dict[str, Any] = {"type": "string", "pattern": f"^{regex}$"}
        if re.fullmatch(r"[\w|]+", regex):  # an alternation of literals
            schema = {"type": "string", "enum": regex.split("|")}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    path = _GROUP.sub(param, tail)
    if path.endswith("/?"):
        path = path[:-2]
    path = path.replace("\\.", ".")
    if re.search(r"[()\[\]*+?\\]", path):
        raise ValueError(f"route {pattern!r}: cannot be written as an OpenAPI path")
    return path, params


def build_spec(routes: list[tuple], base: str) -> dict[str, Any]:
    """The OpenAPI 3 document of the API ``routes`` mounted at ``base`` (…/api/v1)."""
    spec = APISpec(
        title=API_TITLE, version=version("ecluse"), openapi_version="3.0.3",
        info={"description": "REST API of the Écluse airlock: output requests, files, "
              "reviews and release. Authenticate with 'Authorization: token <hub API "
              "token>' (scope access:services!service=airlock) or the hub OAuth cookie."},
        servers=[{"url": base}],
        components={"securitySchemes": {
            "hubToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                         "description": "'token <hub API token>'"}}},
        security=[{"hubToken": []}],
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema)
    for route in routes:
        pattern, handler = route[0], route[1]
        if getattr(handler, "openapi_hidden", False):
            continue
        found = openapi_path(pattern, base)
        if found is None:
            continue
        path, params = found
        operations = {method: dict(op) for method, op in getattr(handler, "openapi", {}).items()}
        for op in operations.values():
            op.setdefault("responses", {})
        if not operations:
            continue
        spec.path(path=path, parameters=params or None, operations=operations)
    return spec.to_dict()
