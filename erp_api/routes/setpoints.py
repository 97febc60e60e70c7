"""/api/v1/setpoints: write a value to a device's tag, through its edge agent (write-back).

The route waits for the device (seconds, at most the ERP's setpoint timeout) without holding
a pooled connection: it borrows one to claim the Idempotency-Key and read the old value, and
one to record the outcome (``erp_api.setpoints``)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from erp_api import idempotency, setpoints
from erp_api.deps import IdempotencyKey, Operating
from erp_api.errors import (
    BrokerUnavailableError,
    DeviceFailedError,
    DeviceRefusedError,
    DeviceTimeoutError,
    ErpError,
    FieldProblem,
)
from erp_api.responses import JSON
from erp_api.routes import problem_response, problems
from erp_api.schemas.setpoints import OldValuePublic, SetpointCreate, SetpointPublic
from factory import mqtt
from factory.commands import WriteReply, WriteRequest

__all__ = ["router"]

router = APIRouter(prefix="/setpoints", tags=["setpoints"])


@router.post("", response_model=SetpointPublic, responses=problems(409, 422, 502, 503, 504))
async def write_setpoint(
    *, request: Request, body: SetpointCreate, caller: Operating, key: IdempotencyKey = None
) -> Response:
    """Ask the device to write `value` to `tag` and answer with its reply: 200 when written;
    422 `setpoint-refused` with the device's `error` code (`not_writable`, `out_of_range`,
    `wrong_type`, `unknown_tag`) and its reason; 502 `device-error` when the device could not
    write it; 504 `device-timeout` when no reply came in time (the device or its agent is
    offline); 503 `broker-unavailable` when the broker cannot be reached. Every request is
    recorded in the audit trail (action `setpoint.written`, `.refused`, `.timeout` or `.unsent`,
    entity `setpoint` `site/device/tag`), with the tag's latest stored value before it.

    With an `Idempotency-Key`, a retry of a request the device answered (200, 422, 502) replays
    that answer (`Idempotent-Replayed: true`) and sends nothing; after 503 or 504 nothing was
    written and the key is free: a retry asks the device again. A retry while the first request
    still waits for the device is 409 `request-in-progress` (`Retry-After`); the same key with a
    different request is 409 `idempotency-key-reused`. A key whose request never got an answer
    (its process stopped) is free again after the setpoint timeout plus 60 s."""
    target = setpoints.Target(body.site, body.device, body.tag)
    actor = caller.actor
    sender: setpoints.SetpointSender | None = getattr(request.app.state, "setpoints", None)
    timeout_s = setpoints.DEFAULT_TIMEOUT_S if sender is None else sender.timeout_s
    claim: idempotency.Claim | None = None
    async with caller.pool.connection() as conn:
        if key is not None:
            claimed = await idempotency.claim_outside(
                conn, actor, key, request, body, wait=timedelta(seconds=timeout_s),
                stale_after=setpoints.stale_after(timeout_s),
            )  # fmt: skip
            if isinstance(claimed, Response):
                return claimed
            claim = claimed
        old = await setpoints.latest_sample(conn, target)
    command = setpoints.new_request(target, body.value, actor)
    reply, reason = None, None
    if sender is None:
        reason = "this ERP has no MQTT broker configured (FACTORY_MQTT_URL)"
    else:
        try:
            reply = await sender.send(target, command)
        except mqtt.MqttError as exc:
            reason = f"the broker could not be reached: {exc}"
    outcome = "unsent" if reason is not None else setpoints.outcome_of(reply)
    answer = _answer(request, body, command, by=actor.name, old=old, reply=reply, reason=reason, timeout_s=timeout_s)
    await setpoints.record(caller.pool, actor, target, command, old=old, outcome=outcome, reply=reply, reason=reason,
                           claim=claim, answer=answer)  # fmt: skip
    return answer


def _answer(
    request: Request, body: SetpointCreate, command: WriteRequest, *, by: str, old: setpoints.OldValue | None,
    reply: WriteReply | None, reason: str | None, timeout_s: float,
) -> Response:  # fmt: skip
    """The response, rendered as the problem handlers render errors: recorded as it is sent."""
    if reason is not None:
        return _problem(request, BrokerUnavailableError(reason, request_id=command.id))
    if reply is None:
        late = f"{body.site}/{body.device} did not answer within {timeout_s:g}s"
        return _problem(request, DeviceTimeoutError(late, request_id=command.id))
    if not reply.ok:
        return _problem(request, _refusal(reply))
    answer = SetpointPublic(
        request_id=command.id, site=body.site, device=body.device, tag=body.tag,
        value=body.value if reply.value is None else reply.value,
        old=None if old is None else OldValuePublic(value=old.value, at=old.at),
        by=by, replied_at=setpoints.replied_at(reply),
    )  # fmt: skip
    return Response(answer.model_dump_json(), media_type=JSON)


def _problem(request: Request, error: ErpError) -> Response:
    return problem_response(error.problem(request.url.path), error.headers)


def _refusal(reply: WriteReply) -> ErpError:
    reason = reply.reason or f"refused: {reply.error}"
    if reply.error == "device_error":
        return DeviceFailedError(reason, error=reply.error, request_id=reply.id)
    field = "body.tag" if reply.error in ("unknown_tag", "not_writable") else "body.value"
    return DeviceRefusedError(reason, errors=[FieldProblem(field=field, reason=reason)], error=reply.error,
                              request_id=reply.id)  # fmt: skip
