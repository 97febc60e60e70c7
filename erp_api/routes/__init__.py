"""One router per resource, mounted under /api/v1 by ``erp_api.app``."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from erp_api.errors import Problem
from erp_api.schemas.common import NO_NUL

__all__ = ["NO_NUL", "PROBLEM_MEDIA_TYPE", "problem_response", "problems"]

PROBLEM_MEDIA_TYPE = "application/problem+json"

_DESCRIPTIONS = {
    400: "Bad request",
    401: "No valid bearer token or API key",
    403: "The caller's role may not do this",
    404: "No such resource",
    409: "Conflicts with the current state (stock, status, uniqueness, idempotency key reuse)",
    412: "If-Match does not match the current ETag",
    422: "A field is not valid; `errors` names each field and reason",
    428: "If-Match is required for updates",
    429: "Too many failed sign-ins from this name or address; `Retry-After` says when to try again",
    502: "The device could not carry it out (its equipment failed or refused the write)",
    503: "Too busy or the database is unreachable; `Retry-After` says when to try again",
    504: "The device did not answer in time (offline, or its broker connection is down)",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem documents with these status codes."""
    return {
        code: {"model": Problem, "description": _DESCRIPTIONS[code], "content": {PROBLEM_MEDIA_TYPE: {}}}
        for code in codes
    }


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    body = problem.model_dump_json(exclude_none=True).encode()
    return Response(body, status_code=problem.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
