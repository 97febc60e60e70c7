"""The write-back contract, version 1: requests on ``.../cmd`` and replies on ``.../cmd/reply``.

Edge-safe (standard library only): the edge agent answers requests, any cloud part or
operator tool may send them. docs/wire-format.md describes the same rules.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from factory.wire import TAG_RE, WireError

__all__ = [
    "ERROR_CODES",
    "CommandError",
    "ErrorCode",
    "WriteReply",
    "WriteRequest",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

VERSION: Final = 1
ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_TEXT: Final = 1024
ErrorCode = Literal["bad_request", "unknown_tag", "not_writable", "wrong_type", "out_of_range", "device_error"]
ERROR_CODES: Final = frozenset(ErrorCode.__args__)  # type: ignore[attr-defined]
WriteValue = float | int | bool | str


class CommandError(WireError):
    """A request that breaks the contract; ``request_id`` is its id when that much was readable."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class WriteRequest:
    id: str
    tag: str
    value: WriteValue


@dataclass(frozen=True, slots=True)
class WriteReply:
    """The result of one request: ``ok``, or the error code and a reason in words."""

    id: str | None
    ok: bool
    ts: int
    tag: str | None = None
    error: ErrorCode | None = None
    reason: str | None = None


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"{what} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CommandError(f"{what} must be a JSON object")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def decode_request(data: bytes) -> WriteRequest:
    body = _load(data, "request")
    request_id = body.get("id")
    if not isinstance(request_id, str) or not ID_RE.fullmatch(request_id):
        raise CommandError(f"id must match {ID_RE.pattern}")
    if body.get("v") != VERSION:
        raise CommandError(f"unsupported version v={body.get('v')!r}, expected {VERSION}", request_id)
    if extra := set(body) - {"v", "id", "tag", "value"}:
        raise CommandError(f"unknown fields {sorted(extra)}", request_id)
    tag, value = body.get("tag"), body.get("value")
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise CommandError(f"tag must match {TAG_RE.pattern}", request_id)
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError("value must be finite", request_id)
    if not isinstance(value, bool | int | float | str) or (isinstance(value, str) and len(value) > MAX_TEXT):
        raise CommandError(f"value must be a number, a boolean or a text of at most {MAX_TEXT} characters", request_id)
    return WriteRequest(request_id, tag, value)


def encode_request(request: WriteRequest) -> bytes:
    body = {"v": VERSION, "id": request.id, "tag": request.tag, "value": request.value}
    return json.dumps(body, separators=(",", ":")).encode()


def encode_reply(reply: WriteReply) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "id": reply.id, "ok": reply.ok, "ts": reply.ts}
    for key in ("tag", "error", "reason"):
        if (value := getattr(reply, key)) is not None:
            body[key] = value
    return json.dumps(body, separators=(",", ":")).encode()


def decode_reply(data: bytes) -> WriteReply:
    body = _load(data, "reply")
    if body.get("v") != VERSION or not isinstance(body.get("ok"), bool) or not isinstance(body.get("ts"), int):
        raise CommandError('reply must hold "v": 1, "ok" (boolean) and "ts" (integer)')
    error = body.get("error")
    if body["ok"] == (error is not None) or (error is not None and error not in ERROR_CODES):
        raise CommandError(f"reply error must be absent when ok and one of {sorted(ERROR_CODES)} otherwise")
    return WriteReply(
        id=body.get("id"), ok=body["ok"], ts=body["ts"], tag=body.get("tag"), error=error, reason=body.get("reason")
    )
