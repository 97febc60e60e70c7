"""Responses with ETags, and the If-Match rules for optimistic concurrency.

Every versioned resource carries an integer ``version``; its strong ETag is
``"<version>"``. Updates (PATCH) must send ``If-Match`` (428 without it, 412 when it no
longer matches); state-change commands accept it optionally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from fastapi import Response
from pydantic import BaseModel

from erp_api.errors import PreconditionFailedError, PreconditionRequiredError, UnprocessableError

__all__ = ["JSON", "Doc", "Reply", "check_version", "etag", "expected_version", "reply"]

JSON: Final = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """A response before it is sent: what idempotency records and replays."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(content=self.body, status_code=self.status, headers=self.headers, media_type=JSON)


@dataclass(frozen=True, slots=True)
class Doc:
    """A resource as the database renders it (``erp.order_doc``, ``erp.invoice_doc``): sent as
    it comes, never parsed and serialised again."""

    id: int
    version: int
    json: str

    def reply(self, status: int = 200, *, location: str | None = None) -> Reply:
        headers = {"ETag": etag(self.version)}
        if location is not None:
            headers["Location"] = location
        return Reply(status=status, body=self.json.encode(), headers=headers)


def etag(version: int) -> str:
    return f'"{version}"'


def reply(model: BaseModel, status: int = 200, *, version: int | None = None, location: str | None = None) -> Reply:
    headers: dict[str, str] = {}
    if version is not None:
        headers["ETag"] = etag(version)
    if location is not None:
        headers["Location"] = location
    return Reply(status=status, body=model.model_dump_json().encode(), headers=headers)


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
    if not inner.isdigit() or not value.startswith('"') or not value.endswith('"'):
        raise UnprocessableError.on_field("header.If-Match", 'must be a quoted ETag such as "3" or *')
    return int(inner)


def check_version(expected: int | None, current: int) -> None:
    if expected is not None and expected != current:
        raise PreconditionFailedError(f"the resource is at version {current}, not {expected}; read it again")
