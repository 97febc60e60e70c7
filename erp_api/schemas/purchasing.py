"""Purchasing: suppliers and their items, purchase orders, supplier invoices, reorder suggestions."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from erp_api.schemas.common import (
    Absent,
    AmountIn,
    Flag,
    Id,
    Input,
    IsoDate,
    Money,
    PriceIn,
    Quantity,
    StockQuantity,
    TaxRate,
    Update,
    WholeNumber,
)

__all__ = [
    "ConversionPublic",
    "ConvertCommand",
    "PurchaseOrderCreate",
    "PurchaseOrderLineIn",
    "PurchaseOrderLinePublic",
    "PurchaseOrderPublic",
    "PurchaseOrderStatus",
    "PurchaseOrderUpdate",
    "ReceiveCommand",
    "ReleaseCommand",
    "ReorderSuggestionPublic",
    "SupplierCreate",
    "SupplierInvoiceCreate",
    "SupplierInvoiceLineIn",
    "SupplierInvoiceLinePublic",
    "SupplierInvoicePublic",
    "SupplierInvoiceStatus",
    "SupplierItemCreate",
    "SupplierItemPublic",
    "SupplierItemUpdate",
    "SupplierPaymentCreate",
    "SupplierPublic",
    "SupplierUpdate",
]

PurchaseOrderStatus = Literal["draft", "approved", "partly_received", "received", "invoiced", "closed", "cancelled"]
SupplierInvoiceStatus = Literal["held", "posted", "paid"]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", examples=["ACME"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
Terms = Annotated[int, Field(ge=0, le=365, strict=True), WholeNumber]
LeadTime = Annotated[int, Field(ge=0, le=365, strict=True, description="Days from order to delivery."), WholeNumber]
LineNo = Annotated[int, Field(ge=1, le=10_000, strict=True), WholeNumber]
Notes = Annotated[str, Field(max_length=2000)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class SupplierCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"code": "ACME", "name": "Acme Bearings", "currency": "EUR", "payment_terms_days": 30}]
        },
    )
    code: Code
    name: Name
    currency: Currency = Field(description="What the supplier trades in; purchase orders need the ledger's.")
    payment_terms_days: Terms = 30
    active: Flag = True


class SupplierUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"payment_terms_days": 45}]})
    name: Name | Absent = None
    currency: Currency | Absent = None
    payment_terms_days: Terms | Absent = None
    active: Flag | Absent = None


class SupplierPublic(BaseModel):
    id: int
    code: str
    name: str
    currency: str
    payment_terms_days: int
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class SupplierItemCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "supplier_id": 3,
                    "product_id": 12,
                    "price": {"amount": "39.50", "currency": "EUR"},
                    "lead_time_days": 7,
                    "min_order_quantity": "10",
                    "preferred": True,
                }
            ]
        },
    )
    supplier_id: Id
    product_id: Id
    price: PriceIn = Field(description="In the supplier's currency.")
    lead_time_days: LeadTime = 0
    min_order_quantity: StockQuantity = Decimal(0)
    preferred: Flag = Field(default=False, description="Reorder suggestions buy here; at most one per product.")


class SupplierItemUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"preferred": True}]})
    price: PriceIn | Absent = None
    lead_time_days: LeadTime | Absent = None
    min_order_quantity: StockQuantity | Absent = None
    preferred: Flag | Absent = None


class SupplierItemPublic(BaseModel):
    id: int
    supplier_id: int
    product_id: int
    sku: str
    price: Money
    lead_time_days: int
    min_order_quantity: Decimal
    preferred: bool
    version: int
    created_at: datetime
    updated_at: datetime


class PurchaseOrderLineIn(Input):
    model_config = ConfigDict(extra="forbid")
    product_id: Id
    quantity: Quantity
    unit_price: PriceIn | None = Field(
        default=None, description="Default: the supplier's price for the product, else its standard cost."
    )
    expected_date: IsoDate | None = Field(default=None, description="Default: the order's expected date.")


class PurchaseOrderCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "supplier_id": 3,
                    "warehouse_id": 2,
                    "expected_date": "2025-03-14",
                    "lines": [{"product_id": 12, "quantity": "20"}],
                }
            ]
        },
    )
    supplier_id: Id
    warehouse_id: Id = Field(description="Goods are received into this warehouse.")
    expected_date: IsoDate | None = None
    notes: Notes | None = None
    lines: list[PurchaseOrderLineIn] = Field(min_length=1, max_length=200)


class PurchaseOrderUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"expected_date": "2025-03-21"}]})
    expected_date: IsoDate | None = None
    notes: Notes | None = None
    lines: Annotated[list[PurchaseOrderLineIn], Field(min_length=1, max_length=200)] | Absent = None


class PurchaseOrderLinePublic(BaseModel):
    line_no: int
    product_id: int
    sku: str
    quantity: Decimal
    unit_price: Money
    expected_date: date | None
    received_quantity: Decimal
    invoiced_quantity: Decimal
    net: Money


class PurchaseOrderPublic(BaseModel):
    id: int
    number: str = Field(examples=["PO-000042"])
    supplier_id: int
    warehouse_id: int
    status: PurchaseOrderStatus
    expected_date: date | None
    notes: str | None
    lines: list[PurchaseOrderLinePublic]
    net: Money
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None


class ReceiveCommand(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"line_no": 1, "quantity": "5"}]})
    line_no: LineNo
    quantity: Quantity = Field(description="At most what is left to receive on the line (409 beyond it).")
    note: Notes | None = None


class SupplierInvoiceLineIn(Input):
    model_config = ConfigDict(extra="forbid")
    line_no: LineNo = Field(description="The purchase order line invoiced.")
    quantity: Quantity
    unit_price: PriceIn
    tax_rate: TaxRate = Decimal(0)


class SupplierInvoiceCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "purchase_order_id": 42,
                    "supplier_reference": "ACME-2025-0117",
                    "invoice_date": "2025-03-15",
                    "lines": [
                        {
                            "line_no": 1,
                            "quantity": "20",
                            "unit_price": {"amount": "39.50", "currency": "EUR"},
                            "tax_rate": "0.19",
                        }
                    ],
                }
            ]
        },
    )
    purchase_order_id: Id
    supplier_reference: Annotated[str, Field(min_length=1, max_length=64, description="The supplier's number.")]
    invoice_date: IsoDate
    lines: list[SupplierInvoiceLineIn] = Field(min_length=1, max_length=200)

    @field_validator("lines")
    @classmethod
    def _distinct(cls, lines: list[SupplierInvoiceLineIn]) -> list[SupplierInvoiceLineIn]:
        if len({line.line_no for line in lines}) != len(lines):
            raise ValueError("each line_no may appear once")
        return lines


class SupplierInvoiceLinePublic(BaseModel):
    line_no: int
    product_id: int
    sku: str
    quantity: Decimal
    unit_price: Money
    tax_rate: Decimal
    net: Money
    tax: Money
    hold_reason: str | None = Field(description="Why the three-way match holds this line; null: it matches.")


class SupplierInvoicePublic(BaseModel):
    id: int
    number: str = Field(examples=["SI-000007"])
    supplier_id: int
    purchase_order_id: int
    supplier_reference: str
    invoice_date: date
    due_date: date
    status: SupplierInvoiceStatus
    lines: list[SupplierInvoiceLinePublic]
    net: Money
    tax: Money
    gross: Money
    paid: Money
    outstanding: Money
    released_by: str | None
    release_reason: str | None
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    posted_at: datetime | None


class ReleaseCommand(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "price rise agreed by phone with Acme"}]}
    )
    reason: Reason


class SupplierPaymentCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": {"amount": "940.10", "currency": "EUR"}, "paid_on": "2025-04-14"}]},
    )
    amount: AmountIn
    paid_on: IsoDate | None = Field(default=None, description="Default: today.")
    reference: Annotated[str, Field(max_length=200)] | None = None


class ReorderSuggestionPublic(BaseModel):
    product_id: int
    sku: str
    warehouse_id: int
    warehouse_code: str
    on_hand: Decimal
    reserved: Decimal
    on_order: Decimal = Field(description="Draft, approved and partly received purchase order lines not yet received.")
    back_ordered: Decimal = Field(description="Spare parts open maintenance orders need beyond what is reserved.")
    reorder_point: Decimal
    quantity: Decimal = Field(description="What to buy: the shortfall, at least the minimum order quantity.")
    supplier_id: int | None
    supplier_code: str | None
    unit_price: Money | None
    lead_time_days: int | None
    needed_by: date
    reasons: list[str]


class ConvertCommand(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"warehouse_id": 2}, {"warehouse_id": 2, "product_ids": [12]}]},
    )
    warehouse_id: Id | None = Field(default=None, description="Only this warehouse's suggestions; default: all.")
    product_ids: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only these products' suggestions (a requisition); default: all. Services must name them.",
    )


class ConversionPublic(BaseModel):
    purchase_orders: list[PurchaseOrderPublic] = Field(
        description="The draft orders made, one per supplier and warehouse."
    )
