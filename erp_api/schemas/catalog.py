"""Products (with bills of materials), customers and warehouses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from erp_api.schemas.common import (
    Absent,
    Flag,
    Id,
    IdealRate,
    Input,
    Money,
    PriceIn,
    Quantity,
    StockQuantity,
    TaxRate,
    Update,
    WholeNumber,
)

__all__ = [
    "BomComponent",
    "CustomerCreate",
    "CustomerPublic",
    "CustomerUpdate",
    "ProductCreate",
    "ProductPublic",
    "ProductUpdate",
    "WarehouseCreate",
    "WarehousePublic",
    "WarehouseUpdate",
]

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["BOLT-M8"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Uom = Annotated[
    str, Field(pattern=r"^[a-z0-9]{1,8}$", description="Unit of measure: ea, kg, t, l, m ...", examples=["ea"])
]
# No whitespace, control characters or NUL, spelled out: `\s` means different sets in the
# document's regex dialect (ECMA, Python) and pydantic's (Rust).
Email = Annotated[
    str,
    Field(
        max_length=254,
        pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+$",
        examples=["buyer@example.com"],
    ),
]
Text = Annotated[str, Field(max_length=2000)]


class BomComponent(Input):
    model_config = ConfigDict(extra="forbid")
    component_id: Id
    quantity: Quantity = Field(description="Component quantity per one unit of the product.")


def _distinct_components(bom: list[BomComponent] | None) -> list[BomComponent] | None:
    if bom is not None and len({c.component_id for c in bom}) != len(bom):
        raise ValueError("each component may appear once")
    return bom


class ProductCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sku": "SUGAR-50KG",
                    "name": "Refined sugar, 50 kg bag",
                    "uom": "ea",
                    "price": {"amount": "42.00", "currency": "EUR"},
                    "cost": {"amount": "30.00", "currency": "EUR"},
                    "tax_rate": "0.07",
                    "reorder_point": "100",
                    "bom": [],
                }
            ]
        },
    )
    sku: Sku
    name: Name
    uom: Uom
    price: PriceIn
    cost: PriceIn | None = Field(default=None, description="Standard cost for stock valuation; zero when absent.")
    tax_rate: TaxRate
    reorder_point: StockQuantity = Decimal(0)
    ideal_rate: IdealRate | None = None
    bom: list[BomComponent] = Field(default_factory=list, max_length=100)

    _bom = field_validator("bom")(_distinct_components)


class ProductUpdate(Update):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"price": {"amount": "45.00", "currency": "EUR"}}]}
    )
    name: Name | Absent = None
    uom: Uom | Absent = None
    price: PriceIn | Absent = None
    cost: PriceIn | Absent = None
    tax_rate: TaxRate | Absent = None
    reorder_point: StockQuantity | Absent = None
    ideal_rate: IdealRate | Absent = None
    active: Flag | Absent = None
    bom: Annotated[list[BomComponent], Field(max_length=100)] | Absent = None

    _bom = field_validator("bom")(_distinct_components)


class ProductPublic(BaseModel):
    id: int
    sku: str
    name: str
    uom: str
    price: Money
    cost: Money
    tax_rate: Decimal
    reorder_point: Decimal
    ideal_rate: Decimal | None
    active: bool
    bom: list[BomComponent]
    version: int
    created_at: datetime
    updated_at: datetime


class CustomerCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Sweet Foods Ltd", "email": "ap@sweetfoods.example", "payment_terms_days": 30}]
        },
    )
    name: Name
    email: Email | None = None
    tax_id: Annotated[str, Field(max_length=64)] | None = None
    address: Text | None = None
    payment_terms_days: Annotated[int, Field(ge=0, le=365, strict=True), WholeNumber] = 30


class CustomerUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"payment_terms_days": 45}]})
    name: Name | Absent = None
    email: Email | None = None
    tax_id: Annotated[str, Field(max_length=64)] | None = None
    address: Text | None = None
    payment_terms_days: Annotated[int, Field(ge=0, le=365, strict=True), WholeNumber] | Absent = None


class CustomerPublic(BaseModel):
    id: int
    name: str
    email: str | None
    tax_id: str | None
    address: str | None
    payment_terms_days: int
    version: int
    created_at: datetime
    updated_at: datetime


class WarehouseCreate(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"code": "WH-1", "name": "Finished goods"}]}
    )
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
    name: Name


class WarehouseUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Spare parts store"}]})
    name: Name | Absent = None


class WarehousePublic(BaseModel):
    id: int
    code: str
    name: str
    version: int
    created_at: datetime
    updated_at: datetime
