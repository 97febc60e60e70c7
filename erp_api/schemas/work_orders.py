"""Work orders: production (BOM consumption) and maintenance (spare parts reserved)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from erp_api.schemas.common import Absent, Id, IdealRate, Input, Quantity, StockQuantity, Update
from factory.wire import NAME_RE

__all__ = [
    "MaintenanceCreate",
    "PartPublic",
    "Priority",
    "ProduceCommand",
    "ProductionCreate",
    "SparePart",
    "WorkOrderCreate",
    "WorkOrderPublic",
    "WorkOrderStatus",
    "WorkOrderUpdate",
]

WorkOrderStatus = Literal["open", "in_progress", "done", "cancelled"]
Priority = Literal["low", "normal", "high", "urgent"]
Asset = Annotated[str, Field(min_length=1, max_length=128, examples=["mill1"], description="Line or asset name.")]
Site = Annotated[
    str | None,
    Field(
        default=None,
        pattern=f"^{NAME_RE.pattern}$",
        examples=["mill-a"],
        description="The plant site the line or asset is at (as in the devices' topics). Production counts and"
        " OEE match the order to the line at this site; without one, to a line of that name at any site.",
    ),
]
Notes = Annotated[str, Field(max_length=2000)]


class SparePart(Input):
    model_config = ConfigDict(extra="forbid")
    product_id: Id
    quantity: Quantity


class ProductionCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "production",
                    "product_id": 7,
                    "planned_quantity": "500",
                    "warehouse_id": 1,
                    "site": "mill-a",
                    "asset": "mill1",
                }
            ]
        },
    )
    kind: Literal["production"]
    product_id: Id = Field(description="The finished good; it must have a bill of materials.")
    planned_quantity: Quantity
    warehouse_id: Id = Field(description="Components are taken from and finished goods put into this warehouse.")
    site: Site
    asset: Asset
    ideal_rate: IdealRate | None = Field(
        default=None, description="This run's ideal rate, when it differs from the product's (OEE performance)."
    )
    priority: Priority = "normal"
    notes: Notes | None = None


class MaintenanceCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "maintenance",
                    "site": "mill-a",
                    "asset": "centrifugal1",
                    "reason": "bearing failure risk 0.83 (RUL 41 h)",
                    "priority": "high",
                    "warehouse_id": 2,
                    "spare_parts": [{"product_id": 12, "quantity": "2"}],
                }
            ]
        },
    )
    kind: Literal["maintenance"]
    site: Site
    asset: Asset
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    priority: Priority = "normal"
    warehouse_id: Id = Field(description="Spare parts are reserved in this warehouse.")
    spare_parts: list[SparePart] = Field(default_factory=list, max_length=50)
    backorder: bool = Field(
        default=True,
        description="Reserve what is in stock and back-order the rest (reserved as stock arrives);"
        " false: all parts reserved now or 409 naming the short ones.",
    )
    notes: Notes | None = None

    @field_validator("spare_parts")
    @classmethod
    def _distinct(cls, parts: list[SparePart]) -> list[SparePart]:
        if len({p.product_id for p in parts}) != len(parts):
            raise ValueError("each spare part product may appear once")
        return parts


WorkOrderCreate = Annotated[ProductionCreate | MaintenanceCreate, Field(discriminator="kind")]


class WorkOrderUpdate(Update):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"priority": "urgent"}]})
    priority: Priority | Absent = None
    notes: Notes | None = None


class ProduceCommand(Input):
    """Good units made (into stock) and units scrapped (their components used, nothing received)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"quantity": "100"}, {"quantity": "96", "scrap": "4"}]}
    )
    quantity: StockQuantity = Field(description="Good units made; they go into the order's warehouse.")
    scrap: StockQuantity = Field(
        default=Decimal(0), description="Units made and scrapped: they consume components, nothing is received."
    )

    @model_validator(mode="after")
    def _something_made(self) -> ProduceCommand:
        if self.quantity + self.scrap <= 0:
            raise ValueError("quantity and scrap cannot both be zero")
        return self


class PartPublic(BaseModel):
    product_id: int
    sku: str
    quantity: Decimal
    reserved: Decimal = Field(description="Held for this order now.")
    backordered: Decimal = Field(description="Still to reserve (while the order is open or running).")


class WorkOrderPublic(BaseModel):
    id: int
    number: str = Field(examples=["WO-000031"])
    kind: Literal["production", "maintenance"]
    status: WorkOrderStatus
    site: str | None
    asset: str
    warehouse_id: int
    product_id: int | None
    planned_quantity: Decimal | None
    produced_quantity: Decimal
    scrapped_quantity: Decimal
    progress: Decimal | None = Field(
        description="produced_quantity / planned_quantity, to 4 places; null for maintenance orders."
    )
    ideal_rate: Decimal | None
    reason: str | None
    priority: Priority
    notes: str | None
    spare_parts: list[PartPublic]
    parts_ready: bool = Field(description="Every spare part is reserved; only then may the order be completed.")
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
