"""Sales orders and their lines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from erp_api.schemas.common import Absent, Id, Input, Money, PriceIn, Quantity, Update

__all__ = ["OrderCreate", "OrderLineCreate", "OrderLinePublic", "OrderPublic", "OrderStatus", "OrderUpdate"]

OrderStatus = Literal["draft", "confirmed", "shipped", "invoiced", "cancelled"]


class OrderLineCreate(Input):
    model_config = ConfigDict(extra="forbid")
    product_id: Id
    quantity: Quantity
    unit_price: PriceIn | None = Field(default=None, description="Defaults to the product's price.")


class OrderCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 1,
                    "warehouse_id": 1,
                    "notes": "deliver to gate 3",
                    "lines": [{"product_id": 1, "quantity": "20"}, {"product_id": 2, "quantity": "5"}],
                }
            ]
        },
    )
    customer_id: Id
    warehouse_id: Id = Field(description="Ships from this warehouse; reservations are made there.")
    notes: Annotated[str, Field(max_length=2000)] | None = None
    lines: list[OrderLineCreate] = Field(min_length=1, max_length=200)


class OrderUpdate(Update):
    """Changes to a draft order; `lines` replaces all lines."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"notes": "call before delivery"}]})
    warehouse_id: Id | Absent = None
    notes: Annotated[str, Field(max_length=2000)] | None = None
    lines: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=200)] | Absent = None


class OrderLinePublic(BaseModel):
    line_no: int
    product_id: int
    sku: str
    quantity: Decimal
    unit_price: Money
    tax_rate: Decimal
    net: Money
    tax: Money


class OrderPublic(BaseModel):
    id: int
    number: str = Field(examples=["SO-000042"])
    customer_id: int
    warehouse_id: int
    status: OrderStatus
    notes: str | None
    lines: list[OrderLinePublic]
    net: Money
    tax: Money
    gross: Money
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    shipped_at: datetime | None
    invoiced_at: datetime | None
    cancelled_at: datetime | None
