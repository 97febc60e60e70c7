"""A setpoint asked of a device, and the device's answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from erp_api.schemas.common import Input
from factory.commands import MAX_TEXT
from factory.wire import NAME_RE, TAG_RE

__all__ = ["OldValuePublic", "SetpointCreate", "SetpointPublic", "SetpointValue"]

LIMIT: Final = 2**63  # whole numbers as the devices' widest registers hold them

Name = Annotated[str, Field(pattern=f"^{NAME_RE.pattern}$", examples=["mill-a"])]
Tag = Annotated[str, Field(pattern=f"^{TAG_RE.pattern}$", examples=["boiler1.pressure_setpoint"])]
SetpointValue = (
    StrictBool
    | Annotated[StrictInt, Field(gt=-LIMIT, lt=LIMIT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, Field(max_length=MAX_TEXT)]
)


class SetpointCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"site": "mill-a", "device": "boiler-house-pi", "tag": "boiler1.pressure_setpoint",
                          "value": 12.5}]
        },
    )  # fmt: skip

    site: Name
    device: Name
    tag: Tag
    value: SetpointValue = Field(description="A number, a boolean (coils, bits) or a text (string tags).")

    @field_validator("value")
    @classmethod
    def _storable(cls, value: bool | float | str) -> bool | float | str:
        """Text that can be sent and recorded: a lone surrogate is valid JSON and no valid UTF-8."""
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError("text must be valid Unicode (it holds an unpaired surrogate)") from exc
        return value


class OldValuePublic(BaseModel):
    value: float | None = Field(description="The tag's latest stored sample (booleans as 0 and 1).")
    at: datetime = Field(description="When the device read it.")


class SetpointPublic(BaseModel):
    """The device wrote the value."""

    ok: Literal[True] = True
    request_id: str = Field(description="The write-back request's id on the broker (`cmd`, `cmd/reply`).")
    site: str
    device: str
    tag: str
    value: bool | int | float | str = Field(description="The value written, as the device echoed it.")
    old: OldValuePublic | None = Field(description="The tag's latest stored sample before the write; null: none yet.")
    by: str = Field(description="Who asked: the caller's user or API key name, sent to the device as `by`.")
    replied_at: datetime = Field(description="When the device answered.")
