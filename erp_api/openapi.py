"""The OpenAPI document, completed from the routes themselves.

Each operation gets ``x-roles`` (read from its ``RoleGuard``) and the 401/403 problem
responses, so the page planners read and the test that walks every route agree with
what the code enforces.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from erp_api.deps import route_guard
from erp_api.security import Role

__all__ = ["install_openapi", "route_roles"]

DESCRIPTION = """\
Orders, inventory, billing and work orders for the plant.

**Authentication**: `POST /api/v1/auth/token` (OAuth2 password form) returns a short-lived
access token and a longer refresh token; send `Authorization: Bearer <access_token>`.
Services send `X-API-Key`. Each operation lists the roles it admits in `x-roles`.

**Conventions**: cursor pagination (`limit` default 50, at most 200; follow `next_cursor`);
errors are RFC 9457 `application/problem+json` naming each field and reason;
every POST accepts `Idempotency-Key`; PATCH requires `If-Match` with the resource's ETag;
money is `{"amount": "12.50", "currency": "EUR"}` with the amount as an exact decimal string.
"""


def route_roles(route: APIRoute) -> frozenset[Role] | None:
    """The roles a route admits, or None when it needs no credentials."""
    guard = route_guard(route)
    return None if guard is None else guard.roles


SECURITY_SCHEMES = {
    "OAuth2PasswordBearer": {
        "type": "oauth2",
        "description": "Users: the access token from POST /api/v1/auth/token, sent as `Authorization: Bearer ...`.",
        "flows": {"password": {"tokenUrl": "/api/v1/auth/token", "scopes": {}}},
    },
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "Services: an API key."},
}
_REF = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_COMMON = {
    400: "The body cannot be parsed (not JSON, not UTF-8)",
    401: "No valid bearer token or API key",
    403: "The caller's role may not do this",
    422: "A field is not valid; `errors` names each field and reason",
    503: "The database did not answer in time; retry after Retry-After seconds",
}


def _document(operation: dict[str, Any], codes: list[int]) -> None:
    for code in codes:
        operation["responses"].setdefault(str(code), {"description": _COMMON[code], "content": _REF})
    if "422" in operation["responses"]:  # FastAPI adds its own 422 as JSON; ours is a problem document
        operation["responses"]["422"]["content"] = _REF


_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})


def _whole_bounds(node: object) -> None:
    """Bounds back to integers: FastAPI's OpenAPI models hold them as floats, and an id bound
    of 2**63 written as 9.223372036854776e+18 is not the bound the validation applies."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                _whole_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _whole_bounds(item)


def _parameters(operation: dict[str, Any], method: str) -> None:
    """A parameter is sent or left out, never null: the null option FastAPI writes for
    ``X | None`` parameters goes. Every PATCH requires If-Match (each calls
    ``expected_version(required=True)``: 428 without), so the document says so."""
    for parameter in operation.get("parameters", []):
        schema = parameter["schema"]
        options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
        if len(options) == 1:
            parameter["schema"] = {k: v for k, v in schema.items() if k != "anyOf"} | options[0]
        if method == "PATCH" and parameter["in"] == "header" and parameter["name"] == "If-Match":
            parameter["required"] = True


def _links(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each 201 that creates a resource to every operation on it
    (``{collection}/{x_id}`` and its commands): the id from the reply's ``id``, If-Match from its
    ETag. Clients (and stateful tests) follow them: create an order, then read, change,
    confirm and ship that order."""
    for collection, operations in paths.items():
        created = operations.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        item = re.compile(re.escape(collection) + r"/\{(\w+_id)\}(/[\w-]+)?")
        links: dict[str, Any] = {}
        for path, targets in paths.items():
            if (match := item.fullmatch(path)) is None:
                continue
            for target in targets.values():
                parameters = {match[1]: "$response.body#/id"}
                if any(p["name"] == "If-Match" for p in target.get("parameters", [])):
                    parameters["header.If-Match"] = "$response.header.ETag"
                links[target["operationId"]] = {"operationId": target["operationId"], "parameters": parameters}
        if links:
            created["links"] = links


def install_openapi(app: FastAPI, routes: list[tuple[str, APIRoute]]) -> None:
    """Serve the generated document plus ``x-roles`` and 401/403 for every guarded route
    in ``routes`` ((full path, route) pairs: FastAPI's own route list may hold lazily
    included routers, so the app passes its routes explicitly)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=DESCRIPTION,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        _whole_bounds(schema)
        _links(schema["paths"])
        for path, route in routes:
            roles = route_roles(route)
            for method in route.methods or ():
                operation = schema["paths"][path][method.lower()]
                codes = [503]
                if roles is not None:
                    operation["x-roles"] = sorted(roles)
                    operation["security"] = [{"OAuth2PasswordBearer": []}, {"APIKeyHeader": []}]
                    codes += [401, 403]
                if "requestBody" in operation:
                    codes.append(400)
                _parameters(operation, method)
                _document(operation, codes)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
