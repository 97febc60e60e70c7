"""The MCP server's settings: where the database and the ERP are, which credential a stdio
session acts with, and the limits every tool keeps to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from analytics.oee import OeeConfig

__all__ = ["Limits", "McpConfig"]


class Limits(BaseModel):
    """Bounds on what one tool call may ask for, so an assistant cannot scan the plant's history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(200, ge=1, le=10_000, description="rows in one answer")
    max_range_days: float = Field(31.0, gt=0, le=366, description="longest time range one call may ask for")
    max_tags: int = Field(50, ge=1, le=1000, description="named tags in one plant-status call")
    max_horizon_hours: int = Field(168, ge=1, le=24 * 31, description="furthest the scheduler looks ahead")
    statement_timeout_ms: int = Field(5000, ge=100, le=600_000, description="per query")


class McpConfig(BaseModel):
    """What ``factory mcp serve`` needs. ``api_key`` (or ``token``) is the stdio session's ERP
    credential; over HTTP every caller brings their own bearer token instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: SecretStr
    erp_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://")
    jwt_secret: SecretStr | None = None  # to verify ERP JWTs (the ERP's FACTORY_JWT_SECRET)
    api_key: SecretStr | None = None  # the stdio session's ERP API key
    token: SecretStr | None = None  # or an ERP access token
    grafana_url: str = Field("http://127.0.0.1:3000", pattern=r"^https?://")  # the dashboards' links
    erp_timeout_s: float = Field(10.0, gt=0, le=120)
    limits: Limits = Field(default_factory=Limits)
    lines: OeeConfig = Field(default_factory=OeeConfig)  # the production lines (FACTORY_OEE_CONFIG), for forecasts
