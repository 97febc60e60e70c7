"""/api/v1/setpoints: write a value to a device's tag, through its edge agent (write-back).

The route waits for the device (seconds, at most the ERP's setpoint timeout) without holding
a pooled connection: it borrows one to read the old value and one to record the outcome
(``erp_api.setpoints``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from erp_api import setpoints
from erp_api.deps import Operating
from erp_api.errors import (
    BrokerUnavailableError,
    DeviceFailedError,
    DeviceRefusedError,
    DeviceTimeoutError,
    ErpError,
    FieldProblem,
)
from erp_api.responses import JSON
from erp_api.routes import problems
from erp_api.schemas.setpoints import OldValuePublic, SetpointCreate, SetpointPublic
from factory import mqtt
from factory.commands import WriteReply

__all__ = ["router"]

router = APIRouter(prefix="/setpoints", tags=["setpoints"])


@router.post("", response_model=SetpointPublic, responses=problems(422, 502, 503, 504))
async def write_setpoint(*, request: Request, body: SetpointCreate, caller: Operating) -> Response:
    """Ask the device to write `value` to `tag` and answer with its reply: 200 when written;
    422 `setpoint-refused` with the device's `error` code (`not_writable`, `out_of_range`,
    `wrong_type`, `unknown_tag`) and its reason; 502 `device-error` when the device could not
    write it; 504 `device-timeout` when no reply came in time (the device or its agent is
    offline); 503 `broker-unavailable` when the broker cannot be reached. Every request is
    recorded in the audit trail (action `setpoint.written`, `.refused`, `.timeout` or `.unsent`,
    entity `setpoint` `site/device/tag`), with the tag's latest stored value before it.

    Not idempotent by key: repeating a request writes the same value again."""
    target = setpoints.Target(body.site, body.device, body.tag)
    actor = caller.actor
    sender: setpoints.SetpointSender | None = getattr(request.app.state, "setpoints", None)
    old = await setpoints.latest_sample(caller.pool, target)
    command = setpoints.new_request(target, body.value, actor)
    if sender is None:
        reason = "this ERP has no MQTT broker configured (FACTORY_MQTT_URL)"
        await setpoints.record(caller.pool, actor, target, command, old=old, outcome="unsent", reason=reason)
        raise BrokerUnavailableError(reason, request_id=command.id)
    try:
        reply = await sender.send(target, command)
    except mqtt.MqttError as exc:
        reason = f"the broker could not be reached: {exc}"
        await setpoints.record(caller.pool, actor, target, command, old=old, outcome="unsent", reason=reason)
        raise BrokerUnavailableError(reason, request_id=command.id) from exc
    outcome = setpoints.outcome_of(reply)
    await setpoints.record(caller.pool, actor, target, command, old=old, outcome=outcome, reply=reply)
    if reply is None:
        raise DeviceTimeoutError(f"{body.site}/{body.device} did not answer within {sender.timeout_s:g}s",
                                 request_id=command.id)  # fmt: skip
    if not reply.ok:
        raise _refusal(reply)
    answer = SetpointPublic(
        request_id=command.id, site=body.site, device=body.device, tag=body.tag,
        value=body.value if reply.value is None else reply.value,
        old=None if old is None else OldValuePublic(value=old.value, at=old.at),
        by=actor.name, replied_at=setpoints.replied_at(reply),
    )  # fmt: skip
    return Response(answer.model_dump_json(), media_type=JSON)


def _refusal(reply: WriteReply) -> ErpError:
    reason = reply.reason or f"refused: {reply.error}"
    if reply.error == "device_error":
        return DeviceFailedError(reason, error=reply.error, request_id=reply.id)
    field = "body.tag" if reply.error in ("unknown_tag", "not_writable") else "body.value"
    return DeviceRefusedError(reason, errors=[FieldProblem(field=field, reason=reason)], error=reply.error,
                              request_id=reply.id)  # fmt: skip
