"""Invoices, payments, credit notes and the ledger reports."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from erp_api.schemas.common import AmountIn, Id, Input, IsoDate, Money, Quantity, WholeNumber

__all__ = [
    "AccountBalance",
    "AgingRow",
    "CreditLine",
    "CreditNoteCreate",
    "InvoiceCreate",
    "InvoiceLinePublic",
    "InvoicePublic",
    "InvoiceStatus",
    "JournalEntryPublic",
    "JournalLinePublic",
    "PaymentCreate",
    "PaymentPublic",
    "ReceivablesAging",
    "TrialBalance",
]

InvoiceStatus = Literal["open", "partially_paid", "paid", "credited", "issued"]


class InvoiceCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"order_id": 42}]})
    order_id: Id = Field(description="A confirmed or shipped order that has no invoice yet.")


class PaymentCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "amount": {"amount": "119.00", "currency": "EUR"},
                    "method": "bank_transfer",
                    "reference": "BANK-2025-0815-17",
                }
            ]
        },
    )
    amount: AmountIn
    received_on: IsoDate | None = Field(default=None, description="Defaults to today.")
    method: Literal["bank_transfer", "card", "cash", "cheque", "other"] = "bank_transfer"
    reference: Annotated[str, Field(max_length=200)] | None = None


class CreditLine(Input):
    model_config = ConfigDict(extra="forbid")
    line_no: Annotated[int, Field(gt=0, lt=2**31, strict=True), WholeNumber]
    quantity: Quantity


class CreditNoteCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"reason": "2 bags damaged in transit", "lines": [{"line_no": 1, "quantity": "2"}]}]
        },
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    lines: list[CreditLine] | None = Field(
        default=None, min_length=1, max_length=200, description="Omit to credit everything not yet credited."
    )

    @field_validator("lines")
    @classmethod
    def _distinct(cls, lines: list[CreditLine] | None) -> list[CreditLine] | None:
        if lines is not None and len({line.line_no for line in lines}) != len(lines):
            raise ValueError("each line_no may appear once")
        return lines


class InvoiceLinePublic(BaseModel):
    line_no: int
    product_id: int
    description: str
    quantity: Decimal
    unit_price: Money
    net: Money
    tax_rate: Decimal
    tax: Money


class PaymentPublic(BaseModel):
    id: int
    amount: Money
    received_on: date
    method: str
    reference: str | None
    created_by: str
    created_at: datetime


class InvoicePublic(BaseModel):
    id: int
    kind: Literal["invoice", "credit_note"]
    number: str = Field(examples=["INV-2025-000017"])
    status: InvoiceStatus
    order_id: int | None
    credited_invoice_id: int | None
    customer_id: int
    issue_date: date
    due_date: date
    net: Money
    tax: Money
    gross: Money
    paid: Money
    credited: Money
    outstanding: Money
    reason: str | None
    lines: list[InvoiceLinePublic]
    payments: list[PaymentPublic]
    version: int
    created_at: datetime


class JournalLinePublic(BaseModel):
    account: str
    debit: Money
    credit: Money


class JournalEntryPublic(BaseModel):
    id: int
    posted_at: datetime
    kind: str
    memo: str
    reference_type: str | None
    reference_id: int | None
    lines: list[JournalLinePublic]


class AccountBalance(BaseModel):
    code: str
    name: str
    type: Literal["asset", "liability", "equity", "revenue", "expense"]
    debit: Money
    credit: Money
    balance: Money = Field(description="Debit minus credit for assets and expenses, credit minus debit otherwise.")


class TrialBalance(BaseModel):
    as_of: date | None
    accounts: list[AccountBalance]
    total_debit: Money
    total_credit: Money
    balanced: bool


class AgingRow(BaseModel):
    customer_id: int
    customer: str
    current: Money
    days_1_30: Money
    days_31_60: Money
    days_61_90: Money
    over_90: Money
    total: Money


class ReceivablesAging(BaseModel):
    as_of: date
    customers: list[AgingRow]
    total: Money
