"""The ERP's exception tree and its RFC 9457 problem documents.

Domain code raises these; the app turns each into ``application/problem+json`` with a
stable ``type`` URI, the HTTP status, a human ``detail`` and, where a request field is
to blame, ``errors: [{field, reason}]``. Database errors are translated at the store
boundary (``erp_api.db``), so a client never sees a psycopg message.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BrokerUnavailableError",
    "BusyError",
    "ConflictError",
    "ContentTooLargeError",
    "DeviceFailedError",
    "DeviceRefusedError",
    "DeviceTimeoutError",
    "ErpConfigError",
    "ErpError",
    "FieldProblem",
    "ForbiddenError",
    "IdempotencyConflictError",
    "InsufficientStockError",
    "InvalidStateError",
    "NotFoundError",
    "PreconditionFailedError",
    "PreconditionRequiredError",
    "Problem",
    "RequestInProgressError",
    "TooManyAttemptsError",
    "UnauthenticatedError",
    "UnprocessableError",
    "refusal",
]

PROBLEM_BASE = "urn:factory:erp:problem:"


class FieldProblem(BaseModel):
    field: str = Field(description="Where the problem is: `body.lines[0].quantity`, `query.limit`, `header.If-Match`.")
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members (such as ``short_lines``) may follow."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:factory:erp:problem:insufficient-stock",
                    "title": "Insufficient stock",
                    "status": 409,
                    "detail": "1 line cannot be reserved",
                    "instance": "/api/v1/orders/42/confirm",
                    "errors": [{"field": "lines[1]", "reason": "SKU BOLT-M8 in WH-1: requested 12, available 10"}],
                }
            ]
        },
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None


class ErpConfigError(ValueError):
    """The service cannot start with this configuration; the message says what to set."""


class ErpError(Exception):
    """A request the ERP refuses, with the HTTP status and problem type it maps to."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions

    @classmethod
    def on_field(cls, field: str, reason: str, detail: str | None = None) -> Self:
        return cls(detail or f"{field}: {reason}", errors=[FieldProblem(field=field, reason=reason)])

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(
            type=PROBLEM_BASE + self.slug,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
            **self.extensions,
        )


class UnauthenticatedError(ErpError):
    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str = "a bearer token or an API key is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="factory-erp"'})


class ForbiddenError(ErpError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFoundError(ErpError):
    status, slug, title = 404, "not-found", "Not found"


class ConflictError(ErpError):
    status, slug, title = 409, "conflict", "Conflict"


class InvalidStateError(ConflictError):
    slug, title = "invalid-state", "Not allowed in the current state"


class InsufficientStockError(ConflictError):
    slug, title = "insufficient-stock", "Insufficient stock"


class IdempotencyConflictError(ConflictError):
    slug, title = "idempotency-key-reused", "Idempotency key reused with a different request"


class RequestInProgressError(ConflictError):
    """A request under this Idempotency-Key is still running (a setpoint waiting for its device)."""

    slug, title = "request-in-progress", "A request with this Idempotency-Key is still in progress"


class PreconditionFailedError(ErpError):
    status, slug, title = 412, "precondition-failed", "The resource changed (ETag does not match)"


class PreconditionRequiredError(ErpError):
    status, slug, title = 428, "precondition-required", "If-Match is required"


class BusyError(ErpError):
    status, slug, title = 503, "busy", "Too busy; try again shortly"


class ContentTooLargeError(ErpError):
    status, slug, title = 413, "content-too-large", "The request body is too large"


class TooManyAttemptsError(ErpError):
    status, slug, title = 429, "too-many-attempts", "Too many failed sign-ins"


class UnprocessableError(ErpError):
    status, slug, title = 422, "validation", "The request is not valid"


class DeviceRefusedError(UnprocessableError):
    """The device refused a setpoint (its code and reason are the problem's ``error`` and ``detail``)."""

    slug, title = "setpoint-refused", "The device refused the setpoint"


class DeviceFailedError(ErpError):
    """The device took the setpoint but could not write it (its source is down, the PLC refused)."""

    status, slug, title = 502, "device-error", "The device could not write the setpoint"


class BrokerUnavailableError(ErpError):
    status, slug, title = 503, "broker-unavailable", "The MQTT broker is not reachable"


class DeviceTimeoutError(ErpError):
    status, slug, title = 504, "device-timeout", "The device did not answer in time"


def refusal(slug: str, detail: str, members: dict[str, Any]) -> ErpError | None:
    """The error for a refusal raised in SQL (``erp.refuse``), None for an unknown slug."""
    kinds: tuple[type[ErpError], ...] = (
        NotFoundError,
        ConflictError,
        InvalidStateError,
        InsufficientStockError,
        IdempotencyConflictError,
        PreconditionFailedError,
        UnprocessableError,
    )
    for kind in kinds:
        if kind.slug == slug:
            errors = [FieldProblem.model_validate(e) for e in members.pop("errors", None) or []]
            return kind(detail, errors=errors or None, **members)
    return None
