"""The client side of POST /api/v1/setpoints, for ``factory erp setpoint``: one request with
an API key, and the answer sorted into written, refused, timed out or not asked."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import httpx

from erp_api.idempotency import REPLAY_HEADER

__all__ = ["EXIT_NOT_ASKED", "EXIT_REFUSED", "EXIT_TIMEOUT", "Answer", "Setpoint", "SetpointClientError",
           "parse_value", "write"]  # fmt: skip

EXIT_REFUSED: Final = 1  # the device refused or could not write it
EXIT_NOT_ASKED: Final = 2  # the ERP refused the request, or could not reach the broker
EXIT_TIMEOUT: Final = 3  # no answer from the device in time
_INTEGER: Final = re.compile(r"^[+-]?\d+$")
_REFUSED: Final = ("urn:factory:erp:problem:setpoint-refused", "urn:factory:erp:problem:device-error")


class SetpointClientError(Exception):
    """The ERP could not be asked (unreachable, not answering in time, answering with no JSON)."""


@dataclass(frozen=True, slots=True)
class Setpoint:
    site: str
    device: str
    tag: str
    value: bool | int | float | str


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False  # the answer recorded under the Idempotency-Key: nothing was sent this time

    @property
    def exit_code(self) -> int:
        if self.status == 200:
            return 0
        if self.status == 504:
            return EXIT_TIMEOUT
        return EXIT_REFUSED if self.body.get("type") in _REFUSED else EXIT_NOT_ASKED

    def summary(self) -> str:
        """One line for a person."""
        b = self.body
        if self.status == 200:
            old = b.get("old")
            was = f"{old['value']} (read {old['at']})" if old else "no stored value"
            return (f"{b['site']}/{b['device']} {b['tag']}: {was} -> {b['value']}, written at {b['replied_at']}"
                    f" (request {b['request_id']}{self._again})")  # fmt: skip
        code = f" ({b['error']})" if b.get("error") else ""
        return f"{b.get('title', 'refused')}{code}: {b.get('detail', '')} [HTTP {self.status}{self._again}]"

    @property
    def _again(self) -> str:
        return ", replayed" if self.replayed else ""


def parse_value(text: str, *, as_text: bool = False) -> bool | int | float | str:
    """A value from the command line: true/false, a whole number, a finite number, else text."""
    if as_text:
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INTEGER.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def write(
    erp_url: str, api_key: str, setpoint: Setpoint, *, timeout_s: float = 60.0, idempotency_key: str | None = None
) -> Answer:
    """Ask the ERP to write the setpoint; the ERP's answer, whatever its status. With
    ``idempotency_key`` a repeat of a request the device answered gets that answer again
    (``replayed``) and writes nothing."""
    body = {"site": setpoint.site, "device": setpoint.device, "tag": setpoint.tag, "value": setpoint.value}
    headers = {"X-API-Key": api_key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    try:
        with httpx.Client(base_url=erp_url.rstrip("/"), timeout=timeout_s, headers=headers) as client:
            response = client.post("/api/v1/setpoints", json=body)
    except httpx.HTTPError as exc:
        raise SetpointClientError(f"the ERP at {erp_url} could not be asked: {exc}") from exc
    try:
        answer = response.json()
    except ValueError as exc:
        raise SetpointClientError(f"the ERP answered {response.status_code} without JSON") from exc
    if not isinstance(answer, dict):
        raise SetpointClientError(f"the ERP answered {response.status_code} with {type(answer).__name__} JSON")
    return Answer(response.status_code, answer, replayed=response.headers.get(REPLAY_HEADER) == "true")
