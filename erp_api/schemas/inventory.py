"""Stock levels, the movement ledger, and the inventory commands."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from erp_api.schemas.common import Id, Input, Quantity, SignedQuantity

__all__ = [
    "AdjustmentCreate",
    "MovementKind",
    "MovementPublic",
    "ReceiptCreate",
    "StockChangePublic",
    "StockPublic",
    "TransferCreate",
]

MovementKind = Literal["receipt", "issue", "adjustment", "transfer", "reservation", "release"]
Note = Annotated[str, Field(max_length=500)]


class StockPublic(BaseModel):
    product_id: int
    sku: str
    warehouse_id: int
    warehouse_code: str
    on_hand: Decimal
    reserved: Decimal
    available: Decimal = Field(description="on_hand - reserved: what a new reservation may take.")
    reorder_point: Decimal
    below_reorder: bool
    updated_at: datetime | None


class MovementPublic(BaseModel):
    id: int
    at: datetime
    kind: MovementKind
    product_id: int
    warehouse_id: int
    on_hand_delta: Decimal
    reserved_delta: Decimal
    reference_type: str | None
    reference_id: int | None
    note: str | None
    actor: str


class StockChangePublic(BaseModel):
    movements: list[MovementPublic]
    stock: list[StockPublic]


class ReceiptCreate(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"product_id": 1, "warehouse_id": 1, "quantity": "250"}]}
    )
    product_id: Id
    warehouse_id: Id
    quantity: Quantity
    note: Note | None = None


class AdjustmentCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"product_id": 1, "warehouse_id": 1, "delta": "-3", "reason": "damaged in cycle count"}]
        },
    )
    product_id: Id
    warehouse_id: Id
    delta: SignedQuantity = Field(description="Signed change to on hand; not zero.")
    reason: Annotated[str, Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _not_zero(self) -> AdjustmentCreate:
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class TransferCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"product_id": 1, "from_warehouse_id": 1, "to_warehouse_id": 2, "quantity": "20"}]
        },
    )
    product_id: Id
    from_warehouse_id: Id
    to_warehouse_id: Id
    quantity: Quantity
    note: Note | None = None

    @model_validator(mode="after")
    def _two_places(self) -> TransferCreate:
        if self.from_warehouse_id == self.to_warehouse_id:
            raise ValueError("from_warehouse_id and to_warehouse_id must differ")
        return self
