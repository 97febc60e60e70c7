"""Types shared by every resource: money, quantities, tax rates, update helpers."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from erp_api.errors import UnprocessableError

__all__ = [
    "AmountIn",
    "Flag",
    "Id",
    "IdealRate",
    "Input",
    "IsoDate",
    "IsoDateTime",
    "Money",
    "PriceIn",
    "Quantity",
    "StockQuantity",
    "TaxRate",
    "check_currency",
    "money",
    "non_null_changes",
]

_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_date(value: object) -> object:
    """Only ISO 8601 dates: pydantic would otherwise read numbers as Unix timestamps."""
    if isinstance(value, date) or (isinstance(value, str) and _DATE.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")


def _iso_datetime(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and _DATETIME.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date-time, e.g. 2025-03-01T06:00:00Z")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]
# In request bodies numbers and flags are taken as they are typed: `false` is not 0, "3" is not 3.
Id = Annotated[int, Field(gt=0, lt=2**63, strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=3, examples=["12.5"])]
StockQuantity = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=3, examples=["0"])]
IdealRate = Annotated[
    Decimal,
    Field(gt=0, max_digits=14, decimal_places=3, examples=["240"],
          description="Ideal rate for OEE: units of the product's uom per hour at nominal speed."),
]  # fmt: skip
TaxRate = Annotated[Decimal, Field(ge=0, lt=1, max_digits=5, decimal_places=4, examples=["0.19"])]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]


def _no_nul(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


class Input(BaseModel):
    """Base of every request model: unknown fields are refused, and so is text with NUL
    characters (PostgreSQL cannot store them)."""

    model_config = ConfigDict(extra="forbid")

    _text = field_validator("*", mode="after")(_no_nul)


class Money(BaseModel):
    """An exact amount and its ISO 4217 currency; amounts travel as decimal strings."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"amount": "12.50", "currency": "EUR"}]}
    )
    amount: Decimal = Field(max_digits=18, decimal_places=4)
    currency: CurrencyCode


class PriceIn(Input):
    """A unit price or cost: at least zero, up to four decimals."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"amount": "12.5000", "currency": "EUR"}]}
    )
    amount: Decimal = Field(ge=0, max_digits=14, decimal_places=4)
    currency: CurrencyCode


class AmountIn(Input):
    """A positive amount in cents precision (payments, credits)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"amount": "100.00", "currency": "EUR"}]}
    )
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: CurrencyCode


def money(amount: Decimal, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def check_currency(field: str, value: PriceIn | AmountIn | Money, currency: str) -> Decimal:
    """The amount, if it is in the ledger currency (one currency per deployment)."""
    if value.currency != currency:
        raise UnprocessableError.on_field(
            f"body.{field}.currency", f"this ledger keeps {currency}; got {value.currency}"
        )
    return value.amount


def non_null_changes(update: BaseModel, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields a PATCH sets; null only where the field may be empty."""
    changes = update.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name not in nullable:
            raise UnprocessableError.on_field(f"body.{name}", "may not be null")
    if not changes:
        raise UnprocessableError.on_field("body", "nothing to change: send at least one field")
    return changes
