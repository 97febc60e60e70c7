"""The OpenAPI document, completed from the routes themselves.

Each operation gets ``x-roles`` (read from its ``RoleGuard``) and the 401/403 problem
responses, so the page planners read and the test that walks every route agree with
what the code enforces.
"""

from __future__ import annotations

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
                _document(operation, codes)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
