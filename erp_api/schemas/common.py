"""Types shared by every resource: money, quantities, tax rates, update helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, core_schema

from erp_api.errors import UnprocessableError

__all__ = [
    "NO_NUL",
    "Absent",
    "AmountIn",
    "DecimalText",
    "Flag",
    "Id",
    "IdealRate",
    "Input",
    "IsoDate",
    "IsoDateTime",
    "Money",
    "PriceIn",
    "Quantity",
    "SignedQuantity",
    "StockQuantity",
    "TaxRate",
    "Update",
    "WholeNumber",
    "check_currency",
    "money",
    "non_null_changes",
]

NO_NUL: Final = r"^[^\x00]*$"  # the pattern of free text: PostgreSQL cannot store NUL
ID_LIMIT: Final = 2**63  # ids are PostgreSQL bigints, below this (exact as a float, too)
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


@dataclass(frozen=True, slots=True)
class DecimalText:
    """The one rule for a decimal in a request, stated twice from the same numbers: as the
    OpenAPI schema (a string pattern, or a whole JSON number within bounds) and as the check
    the value passes before pydantic reads it. A JSON number with a fraction is refused: it
    is a binary float, and the decimal the client meant is not in it.

    ``whole`` digits before the point (0: only ``0``, for rates below one), up to ``places``
    after it (trailing zeros beyond them are accepted: ``"1.5000"`` is 1.5).
    """

    sign: Literal["positive", "non-negative", "non-zero"]
    whole: int
    places: int

    @property
    def pattern(self) -> str:
        return _decimal_pattern(self.sign, self.whole, self.places)

    def _check(self, value: object) -> object:
        if isinstance(value, float) and value.is_integer():  # 5.0 is the JSON integer 5
            return int(value)
        if isinstance(value, float):
            raise ValueError('send a decimal as a string, e.g. "12.5" (a JSON number with a fraction is a float)')
        if isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise ValueError(self.rule)
        return value

    @property
    def rule(self) -> str:
        bound = {"positive": "greater than 0", "non-negative": "greater than or equal to 0", "non-zero": "not 0"}
        size = "below 1" if self.whole == 0 else f"at most {self.whole} digits before the point"
        return (
            f'must be a decimal {bound[self.sign]}, {size} and {self.places} after it, written as "12.5" '
            "(no exponent, sign only where negative values are allowed)"
        )

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        generated = handler(schema)
        if handler.mode != "validation":
            return generated
        largest = 10**self.whole - 1
        whole: dict[str, Any] = {"type": "integer", "minimum": -largest if self.sign == "non-zero" else 0,
                                 "maximum": largest}  # fmt: skip
        if self.sign == "positive":
            whole["minimum"] = 1
        if self.sign == "non-zero":
            whole["not"] = {"const": 0}
        text = {"type": "string", "pattern": self.pattern}
        extra = {k: v for k, v in generated.items() if k in ("description", "examples", "title")}
        return {"anyOf": [text, whole], **extra}


@cache
def _decimal_pattern(sign: str, whole: int, places: int) -> str:
    fraction = rf"(?:\.[0-9]{{1,{places}}}0*)?"
    integral = "0" if whole == 0 else rf"(?:0|[1-9][0-9]{{0,{whole - 1}}})"
    if sign == "non-negative":
        return rf"^{integral}{fraction}$"
    nonzero_whole = "" if whole == 0 else rf"[1-9][0-9]{{0,{whole - 1}}}{fraction}|"
    positive = rf"(?:{nonzero_whole}0\.[0-9]{{0,{places - 1}}}[1-9]0*)"
    return rf"^{positive}$" if sign == "positive" else rf"^-?{positive}$"


def _whole(value: object) -> object:
    """A JSON number without a fraction is an integer, however it is written (5.0 is 5)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# In request bodies numbers and flags are taken as they are typed: `false` is not 0, "3" is not 3.
WholeNumber = BeforeValidator(_whole)
Id = Annotated[int, Field(gt=0, lt=ID_LIMIT, strict=True), WholeNumber]
Flag = Annotated[bool, Field(strict=True)]
Quantity = Annotated[
    Decimal, Field(gt=0, max_digits=14, decimal_places=3, examples=["12.5"]), DecimalText("positive", 11, 3)
]
StockQuantity = Annotated[
    Decimal, Field(ge=0, max_digits=14, decimal_places=3, examples=["0"]), DecimalText("non-negative", 11, 3)
]
SignedQuantity = Annotated[Decimal, Field(max_digits=14, decimal_places=3), DecimalText("non-zero", 11, 3)]
IdealRate = Annotated[
    Decimal,
    Field(gt=0, max_digits=14, decimal_places=3, examples=["240"],
          description="Ideal rate for OEE: units of the product's uom per hour at nominal speed."),
    DecimalText("positive", 11, 3),
]  # fmt: skip
TaxRate = Annotated[
    Decimal, Field(ge=0, lt=1, max_digits=5, decimal_places=4, examples=["0.19"]), DecimalText("non-negative", 0, 4)
]
# A PATCH field that may be left out but not sent as null: null is not in its schema either.
Absent = SkipJsonSchema[None]
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

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The NUL rule in the document too: every free-text field gets the pattern ``NO_NUL``."""
        generated = handler(schema)
        if handler.mode != "validation":
            return generated
        for prop in handler.resolve_ref_schema(generated).get("properties", {}).values():
            for option in prop.get("anyOf", [prop]):
                if option.get("type") == "string" and "pattern" not in option and "format" not in option:
                    option["pattern"] = NO_NUL
        return generated


class Update(Input):
    """Base of every PATCH body: at least one field, and null only where a field may be emptied
    (declared ``T | None``; the others are ``T | Absent``, so the document has no null for them)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        generated = super().__get_pydantic_json_schema__(schema, handler)
        handler.resolve_ref_schema(generated)["minProperties"] = 1  # "nothing to change" is refused
        return generated


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
    amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4), DecimalText("non-negative", 10, 4)]
    currency: CurrencyCode


class AmountIn(Input):
    """A positive amount in cents precision (payments, credits)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"amount": "100.00", "currency": "EUR"}]}
    )
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2), DecimalText("positive", 12, 2)]
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


@cache
def _nullable(model: type[BaseModel]) -> frozenset[str]:
    """The fields whose schema admits null: what a PATCH may clear."""
    props = model.model_json_schema(mode="validation").get("properties", {})
    return frozenset(name for name, prop in props.items() if {"type": "null"} in prop.get("anyOf", []))


def non_null_changes(update: BaseModel) -> dict[str, Any]:
    """The fields a PATCH sets; null only where the document admits it (``T | None`` fields)."""
    changes = update.model_dump(exclude_unset=True)
    nullable = _nullable(type(update))
    for name, value in changes.items():
        if value is None and name not in nullable:
            raise UnprocessableError.on_field(f"body.{name}", "may not be null")
    if not changes:
        raise UnprocessableError.on_field("body", "nothing to change: send at least one field")
    return changes
