"""The write-back contract, version 1: requests on ``.../cmd`` and replies on ``.../cmd/reply``.

Edge-safe (standard library only): the edge agent answers requests, any cloud part or
operator tool may send them, and ingest records every reply (``telemetry.write_back``).
A reply echoes who asked (``by``) and the value asked for, so the reply alone is the
whole record. docs/wire-format.md describes the same rules.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from factory.wire import MAX_TS_MS, TAG_RE, WireError

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
MAX_BY: Final = 128
ErrorCode = Literal["bad_request", "unknown_tag", "not_writable", "wrong_type", "out_of_range", "device_error"]
ERROR_CODES: Final = frozenset(ErrorCode.__args__)  # type: ignore[attr-defined]
WriteValue = float | int | bool | str


class CommandError(WireError):
    """A request that breaks the contract; ``request_id``, ``tag``, ``by`` and ``value`` are
    what could be read of it (None where that part was missing or broken), for the reply."""

    def __init__(
        self,
        reason: str,
        request_id: str | None = None,
        *,
        tag: str | None = None,
        by: str | None = None,
        value: WriteValue | None = None,
    ) -> None:
        super().__init__(reason)
        self.request_id = request_id
        self.tag = tag
        self.by = by
        self.value = value


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """``by`` is who asks (a user or service name), optional for senders that predate it."""

    id: str
    tag: str
    value: WriteValue
    by: str | None = None


@dataclass(frozen=True, slots=True)
class WriteReply:
    """The result of one request: ``ok``, or the error code and a reason in words; ``by`` and
    ``value`` echo the request's (None where the request had none or it could not be read)."""

    id: str | None
    ok: bool
    ts: int
    tag: str | None = None
    error: ErrorCode | None = None
    reason: str | None = None
    by: str | None = None
    value: WriteValue | None = None


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


def _text_problem(text: str, what: str) -> str | None:
    """Text the database can store: JSON allows NUL and unpaired surrogates, text and jsonb do not."""
    if "\x00" in text:
        return f"{what} must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} must be valid Unicode (it holds an unpaired surrogate)"
    return None


def _value_problem(value: object) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "value must be finite"
    if not isinstance(value, bool | int | float | str) or (isinstance(value, str) and len(value) > MAX_TEXT):
        return f"value must be a number, a boolean or a text of at most {MAX_TEXT} characters"
    return _text_problem(value, "value") if isinstance(value, str) else None


def _by_problem(by: object) -> str | None:
    """None (not given) is fine: senders that predate ``by`` still work."""
    if by is None or (isinstance(by, str) and 1 <= len(by) <= MAX_BY and by.isprintable()):
        return None
    return f"by must be 1 to {MAX_BY} printable characters"


def _tag_problem(tag: object) -> str | None:
    return None if isinstance(tag, str) and TAG_RE.fullmatch(tag) else f"tag must match {TAG_RE.pattern}"


def decode_request(data: bytes) -> WriteRequest:
    body = _load(data, "request")
    request_id = body.get("id")
    if not isinstance(request_id, str) or not ID_RE.fullmatch(request_id):
        raise CommandError(f"id must match {ID_RE.pattern}")
    tag, value, by = body.get("tag"), body.get("value"), body.get("by")
    bad_tag, bad_value, bad_by = _tag_problem(tag), _value_problem(value), _by_problem(by)
    problems = [
        f"unsupported version v={body.get('v')!r}, expected {VERSION}" if body.get("v") != VERSION else None,
        f"unknown fields {sorted(extra)}" if (extra := set(body) - {"v", "id", "tag", "value", "by"}) else None,
        bad_tag,
        bad_value,
        bad_by,
    ]
    if problem := next((p for p in problems if p), None):
        readable = {  # what the reply can still echo
            "tag": None if bad_tag else tag, "value": None if bad_value else value, "by": None if bad_by else by,
        }  # fmt: skip
        raise CommandError(problem, request_id, **readable)
    return WriteRequest(request_id, body["tag"], body["value"], by)


def encode_request(request: WriteRequest) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "id": request.id, "tag": request.tag, "value": request.value}
    if request.by is not None:
        body["by"] = request.by
    return json.dumps(body, separators=(",", ":")).encode()


def encode_reply(reply: WriteReply) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "id": reply.id, "ok": reply.ok, "ts": reply.ts}
    for key in ("tag", "by", "value", "error", "reason"):
        if (value := getattr(reply, key)) is not None:
            body[key] = value
    return json.dumps(body, separators=(",", ":")).encode()


def decode_reply(data: bytes) -> WriteReply:
    """A reply, checked field by field: ingest stores what this returns as it is."""
    body = _load(data, "reply")
    ts, ok, error = body.get("ts"), body.get("ok"), body.get("error")
    if body.get("v") != VERSION or not isinstance(ok, bool) or isinstance(ts, bool) or not isinstance(ts, int):
        raise CommandError('reply must hold "v": 1, "ok" (boolean) and "ts" (integer)')
    if not 0 <= ts <= MAX_TS_MS:
        raise CommandError(f"reply ts must be epoch milliseconds between 0 and {MAX_TS_MS}, got {ts}")
    # a tuple: its `in` compares, where a set's would hash (and raise on a list or an object)
    if ok == (error is not None) or (error is not None and error not in tuple(ERROR_CODES)):
        raise CommandError(f"reply error must be absent when ok and one of {sorted(ERROR_CODES)} otherwise")
    request_id, tag, reason, by = body.get("id"), body.get("tag"), body.get("reason"), body.get("by")
    problems = [
        f"reply id must be null or match {ID_RE.pattern}"
        if request_id is not None and (not isinstance(request_id, str) or not ID_RE.fullmatch(request_id))
        else None,
        _tag_problem(tag) if tag is not None else None,
        _by_problem(by),
        _value_problem(body["value"]) if body.get("value") is not None else None,
        ("reply reason must be a text" if not isinstance(reason, str) else _text_problem(reason, "reply reason"))
        if reason is not None
        else None,
    ]
    if problem := next((p for p in problems if p), None):
        raise CommandError(problem, request_id if isinstance(request_id, str) else None)
    return WriteReply(id=request_id, ok=ok, ts=ts, tag=tag, error=error, reason=reason, by=by, value=body.get("value"))
