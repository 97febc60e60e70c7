"""Responses with ETags, and the If-Match rules for optimistic concurrency.

Every versioned resource carries an integer ``version``; its strong ETag is
``"<version>"``. Updates (PATCH) must send ``If-Match`` (428 without it, 412 when it no
longer matches); state-change commands accept it optionally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fastapi import Response

from erp_api.errors import PreconditionFailedError, PreconditionRequiredError, UnprocessableError

__all__ = ["IF_MATCH_PATTERN", "JSON", "MAX_VERSION", "Doc", "etag", "expected_version"]

JSON: Final = "application/json"
MAX_VERSION: Final = 2**31 - 1  # versions are PostgreSQL integers
# What If-Match may be: *, or a quoted run of ASCII digits (past MAX_VERSION it is well
# formed and never matches: 412, as a weak ETag is). The header's declaration uses it, so
# FastAPI refuses anything else (422) and the OpenAPI document states the same rule.
IF_MATCH_PATTERN: Final = r'^(\*|(W/)?"[0-9]+")$'


@dataclass(frozen=True, slots=True)
class Doc:
    """A resource as the database renders it (``erp.order_doc``, ``erp.invoice_doc``): sent as
    it comes, never parsed and serialised again."""

    id: int
    version: int
    json: str

    def response(self) -> Response:
        return Response(content=self.json, headers={"ETag": etag(self.version)}, media_type=JSON)


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None, *, required: bool) -> int | None:
    """The version the client expects, None for ``*`` or no header (when allowed)."""
    if if_match is None:
        if required:
            raise PreconditionRequiredError("send If-Match with the ETag from your last read of this resource")
        return None
    value = if_match.strip()
    if value == "*":
        return None
    if value.startswith("W/"):
        raise PreconditionFailedError("weak ETags never match for updates; send the strong ETag")
    inner = value.strip('"')
    if not (inner.isascii() and inner.isdigit()) or not value.startswith('"') or not value.endswith('"'):
        raise UnprocessableError.on_field("header.If-Match", 'must be a quoted ETag such as "3" or *')
    if len(inner) > len(str(MAX_VERSION)) or int(inner) > MAX_VERSION:
        raise PreconditionFailedError(f"no resource here ever reaches version {inner[:20]}; read it again")
    return int(inner)
