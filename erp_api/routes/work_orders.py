"""/api/v1/work-orders: production and maintenance work orders.

Each command is one SQL function (``erp_api.work_orders``: ``CREATE``, ``UPDATE``,
``START``, ``PRODUCE``, ``COMPLETE``, ``CANCEL``), called through ``run_function``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from erp_api import work_orders
from erp_api.deps import AnyRole, Ctx, Cursor, IdempotencyKey, IfMatch, Limit, Maintenance, Planning, Production
from erp_api.errors import ForbiddenError
from erp_api.idempotency import run_function
from erp_api.pagination import DEFAULT_LIMIT, Page, PageRequest
from erp_api.responses import JSON, expected_version
from erp_api.routes import NO_NUL, problems
from erp_api.schemas.work_orders import (
    Priority,
    ProduceCommand,
    WorkOrderCreate,
    WorkOrderPublic,
    WorkOrderStatus,
    WorkOrderUpdate,
)
from factory.wire import NAME_RE

__all__ = ["router"]

router = APIRouter(prefix="/work-orders", tags=["work orders"])
WorkOrderId = Annotated[int, Path(gt=0, lt=2**63)]
STATE_PROBLEMS = problems(404, 409, 412, 422)


@router.get("", response_model=Page[WorkOrderPublic], responses=problems(422))
async def list_work_orders(
    *,
    ctx: AnyRole,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Literal["id", "-id", "created_at", "-created_at"] = "id",
    kind: Literal["production", "maintenance"] | None = None,
    status: WorkOrderStatus | None = None,
    site: Annotated[str | None, Query(pattern=f"^{NAME_RE.pattern}$")] = None,
    asset: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    priority: Priority | None = None,
) -> Response:
    """Work orders, filtered by kind, status, site, asset or priority."""
    filters = {"kind": kind, "status": status, "site": site, "asset": asset, "priority": priority}
    body = await work_orders.DOCS.page(ctx.conn, PageRequest(limit=limit, cursor=cursor, sort=sort), filters)
    return Response(body, media_type=JSON)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkOrderPublic, responses=problems(409, 422))
async def create_work_order(
    *, request: Request, body: WorkOrderCreate, ctx: Maintenance, key: IdempotencyKey = None
) -> Response:
    """Open a production or maintenance work order. Maintenance reserves its spare parts (409 if short).
    Services (role `service`) may open maintenance orders only; send an Idempotency-Key."""
    if ctx.who.role == "service" and body.kind != "maintenance":
        raise ForbiddenError("services may open maintenance work orders only")
    args = work_orders.create_args(body)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=work_orders.CREATE, args=args)


@router.get("/{work_order_id}", response_model=WorkOrderPublic, responses=problems(404, 422))
async def get_work_order(*, work_order_id: WorkOrderId, ctx: AnyRole) -> Response:
    """One work order; ETag is its version."""
    return (await work_orders.DOCS.get(ctx.conn, work_order_id)).response()


@router.patch("/{work_order_id}", response_model=WorkOrderPublic, responses=problems(404, 409, 412, 422, 428))
async def update_work_order(
    *, request: Request, work_order_id: WorkOrderId, body: WorkOrderUpdate, ctx: Planning, if_match: IfMatch = None
) -> Response:
    """Change priority or notes of an open or running work order. Requires If-Match."""
    changes = work_orders.update_args(body)  # a null or empty body is 422 before If-Match is judged
    args = (work_order_id, expected_version(if_match, required=True), *changes)
    return await run_function(ctx.conn, ctx.actor, None, request, body, call=work_orders.UPDATE, args=args)


async def _transition(
    call: str, request: Request, ctx: Ctx, work_order_id: int, *, key: str | None, if_match: str | None
) -> Response:
    expected = expected_version(if_match, required=False)
    return await run_function(ctx.conn, ctx.actor, key, request, None, call=call, args=(work_order_id, expected))


@router.post("/{work_order_id}/start", response_model=WorkOrderPublic, responses=STATE_PROBLEMS)
async def start_work_order(
    *,
    request: Request,
    work_order_id: WorkOrderId,
    ctx: Planning,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """open -> in_progress."""
    return await _transition(work_orders.START, request, ctx, work_order_id, key=key, if_match=if_match)


@router.post("/{work_order_id}/complete", response_model=WorkOrderPublic, responses=STATE_PROBLEMS)
async def complete_work_order(
    *,
    request: Request,
    work_order_id: WorkOrderId,
    ctx: Planning,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """in_progress -> done; maintenance consumes its reserved spare parts."""
    return await _transition(work_orders.COMPLETE, request, ctx, work_order_id, key=key, if_match=if_match)


@router.post("/{work_order_id}/cancel", response_model=WorkOrderPublic, responses=STATE_PROBLEMS)
async def cancel_work_order(
    *,
    request: Request,
    work_order_id: WorkOrderId,
    ctx: Planning,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """open or in_progress -> cancelled; releases reserved spare parts."""
    return await _transition(work_orders.CANCEL, request, ctx, work_order_id, key=key, if_match=if_match)


@router.post("/{work_order_id}/produce", response_model=WorkOrderPublic, responses=STATE_PROBLEMS)
async def produce(
    *,
    request: Request,
    work_order_id: WorkOrderId,
    body: ProduceCommand,
    ctx: Production,
    key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Record production on a running order: consumes BOM x (quantity + scrap), adds the good units.
    Planners post by hand; services (role `service`, the analytics production-counts job) post the
    machines' counts, each under an Idempotency-Key of its own."""
    expected = expected_version(if_match, required=False)
    args = (work_order_id, expected, body.quantity, body.scrap)
    return await run_function(ctx.conn, ctx.actor, key, request, body, call=work_orders.PRODUCE, args=args)
