"""The one ERP call analytics makes: record production on a work order, over the ERP's HTTP API.

It acts as a service (``X-API-Key`` of role ``service``) and always sends an
``Idempotency-Key``: the ERP answers a repeated key with the first reply, so a call retried
after a lost answer, a crash or by a second instance records the production once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from analytics.errors import ErpError

__all__ = ["ErpAccess", "ErpClient", "ErpReply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErpAccess:
    """Where the ERP is (``FACTORY_ERP_URL``) and the service key to call it with (``FACTORY_ERP_API_KEY``)."""

    url: str
    api_key: SecretStr


@dataclass(frozen=True, slots=True)
class ErpReply:
    """What the ERP answered: the status and the JSON body (a work order, or a problem)."""

    status: int
    body: dict[str, Any]
    replayed: bool  # the ERP had answered this Idempotency-Key before

    @property
    def problem(self) -> str:
        """The problem's type, last part (``insufficient-stock``, ``invalid-state``...); empty on success."""
        kind = str(self.body.get("type", "")) if self.status >= 400 else ""
        return kind.rsplit(":", 1)[-1].rsplit("/", 1)[-1]

    def describe(self) -> str:
        if self.status < 400:
            return str(self.status)
        return f"{self.status} {self.body.get('title', '')}: {self.body.get('detail', '')}"


class ErpClient:
    """Use as ``async with``; each call has the configured timeout and is tried twice under one key."""

    def __init__(self, access: ErpAccess, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=access.url.rstrip("/") + "/api/v1",
            headers={"X-API-Key": access.api_key.get_secret_value()},
            timeout=timeout_s,
        )

    async def __aenter__(self) -> ErpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def produce(self, work_order: int, quantity: Decimal, scrap: Decimal, *, key: str) -> ErpReply:
        """POST /work-orders/{id}/produce. Raises ErpError when the ERP cannot be reached or fails (5xx)."""
        path = f"/work-orders/{work_order}/produce"
        body = {"quantity": str(quantity), "scrap": str(scrap)}
        for attempt in (1, 2):  # a lost answer is asked again under the same key: the ERP replays it
            try:
                response = await self._http.post(path, json=body, headers={"Idempotency-Key": key})
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise ErpError(f"ERP POST {path}: {exc}") from exc
                log.warning("ERP POST %s: %s; asking again under the same key", path, exc)
        if response.status_code >= 500:
            raise ErpError(f"ERP POST {path}: {response.status_code} {response.text[:200]}")
        try:
            parsed = response.json()
        except ValueError as exc:
            raise ErpError(f"ERP POST {path}: {response.status_code}, not JSON: {response.text[:200]}") from exc
        reply_body = parsed if isinstance(parsed, dict) else {"body": parsed}
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return ErpReply(response.status_code, reply_body, replayed)
