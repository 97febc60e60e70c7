"""Write-back: answers requests on the device's ``cmd`` topic (``factory.commands`` contract).

Only tags marked ``writable`` are written, and only with a value of the tag's type inside
its ``min``/``max``; everything else is refused with a code and a reason on ``cmd/reply``.

Requests arrive on the publisher's connection, a clean session on purpose: a request sent
while the agent was offline is not carried out minutes or hours later, when nobody expects it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from edge_agent.config import EdgeConfig, ModbusTag, TagCommon
from edge_agent.errors import WriteRefusedError
from edge_agent.source import Source
from factory.commands import CommandError, WriteReply, WriteRequest, WriteValue, decode_request, encode_reply
from factory.mqtt import Session
from factory.wire import TopicKind, topic

__all__ = ["CommandHandler", "check_value"]

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 10.0


def check_value(tag: TagCommon, value: WriteValue) -> None:
    """Refuse a value the tag cannot take (``WriteRefusedError``). OPC UA tags have no type
    in the config: the node's own type is checked when writing."""
    if isinstance(tag, ModbusTag):
        if (tag.type == "bool") != isinstance(value, bool) or (tag.type == "string") != isinstance(value, str):
            raise WriteRefusedError("wrong_type", f"{tag.name} is {tag.type}, not {type(value).__name__} {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool) and "int" in tag.type:
            counts = (value - tag.offset) / tag.scale
            if not math.isclose(counts, round(counts), abs_tol=1e-6):
                raise WriteRefusedError(
                    "wrong_type", f"{tag.name} is {tag.type} in steps of {tag.scale}: {value} is not a whole step"
                )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if tag.min is not None and value < tag.min:
        raise WriteRefusedError("out_of_range", f"{tag.name}: {value} is below min {tag.min}")
    if tag.max is not None and value > tag.max:
        raise WriteRefusedError("out_of_range", f"{tag.name}: {value} is above max {tag.max}")


class CommandHandler:
    """Writes requests from ``cmd`` through the device's sources and replies on ``cmd/reply``,
    on the publisher's connection (one connection, one session per device)."""

    def __init__(self, config: EdgeConfig, sources: Sequence[Source]) -> None:
        self._device = config.device
        self.replies = topic(config.site, config.device, TopicKind.CMD_REPLY)
        self._sources = {source.source.name: source for source in sources}
        self._tags = {t.name: (s.name, t) for s in config.sources for t in s.tags}
        self.handled = 0

    async def answer(self, client: Session, payload: bytes) -> None:
        """Handle one request and publish its reply."""
        reply = await self.handle(payload)
        await client.publish(self.replies, encode_reply(reply), qos=1)

    async def handle(self, payload: bytes) -> WriteReply:
        """One request, answered: never raises for anything the request or the device does.

        Every reply echoes who asked and the value asked for (as far as a bad request could
        be read), so the reply alone is the record ingest keeps."""
        self.handled += 1
        try:
            request = decode_request(payload)
        except CommandError as exc:
            log.info("bad write request %s by %s refused: %s", exc.request_id, exc.by or "?", exc)
            refused = WriteRefusedError("bad_request", str(exc))
            return _reply(exc.request_id, refused, tag=exc.tag, by=exc.by, value=exc.value)
        try:
            await self._write(request)
        except WriteRefusedError as exc:
            log.info("write %s = %r by %s refused (%s): %s", request.tag, request.value, request.by or "?", exc.code,
                     exc.reason)  # fmt: skip
            return _reply(request.id, exc, tag=request.tag, by=request.by, value=request.value)
        log.info("wrote %s = %r by %s (request %s)", request.tag, request.value, request.by or "?", request.id)
        return _reply(request.id, None, tag=request.tag, by=request.by, value=request.value)

    async def _write(self, request: WriteRequest) -> None:
        found = self._tags.get(request.tag)
        if found is None:
            raise WriteRefusedError("unknown_tag", f"{request.tag} is not a tag of {self._device}")
        source_name, tag = found
        if not tag.writable:
            raise WriteRefusedError("not_writable", f"{request.tag} is not writable (writable: true in the config)")
        check_value(tag, request.value)
        source = self._sources[source_name]
        if not source.ready:
            raise WriteRefusedError("device_error", f"source {source_name} is not connected")
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await source.write(tag, request.value)
        except TimeoutError as exc:
            raise WriteRefusedError("device_error", f"{request.tag}: no answer within {WRITE_TIMEOUT_S:.0f}s") from exc


def _reply(
    request_id: str | None, refused: WriteRefusedError | None, *, tag: str | None, by: str | None,
    value: WriteValue | None,
) -> WriteReply:  # fmt: skip
    ts = int(time.time() * 1000)
    if refused is None:
        return WriteReply(id=request_id, ok=True, ts=ts, tag=tag, by=by, value=value)
    return WriteReply(
        id=request_id, ok=False, ts=ts, tag=tag, error=refused.code, reason=refused.reason, by=by, value=value
    )
