"""The scheduled maintenance job: score plant assets, open ERP work orders for the risky ones.

``factory analytics run`` calls ``run(conn, config)`` every five minutes (``analytics.jobs``).
Each run scores the assets with the live model of the configured kind into
``maintenance.asset_health``, then opens one maintenance work order, with its spare parts
reserved, for every asset at or above the failure-probability threshold that has no open
order of this cause yet (``maintenance_models.work_orders``); parts not in stock are
back-ordered, so a short part never stops the order, and raise a requisition: a draft purchase
order to the part's preferred supplier (``WorkOrderClient.requisition``) for a planner to approve.

Configuration: a ``MaintenanceJobConfig``, from the YAML file named by
``FACTORY_MAINTENANCE_CONFIG`` (``load_config``); ``FACTORY_ERP_URL`` and
``FACTORY_ERP_API_KEY`` fill in the ERP address and the service key when the file leaves
them out. Without a configuration the job does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from factory.configfile import load_yaml_model
from maintenance_models.errors import RegistryError, WorkOrderError
from maintenance_models.scoring import AssetHealth, ScoringConfig, at_risk, score_live
from maintenance_models.work_orders import OpenResult, Priority, SparePart, WorkOrderClient

__all__ = ["MaintenanceJobConfig", "load_config", "run"]

log = logging.getLogger(__name__)


class MaintenanceJobConfig(BaseModel):
    """What the maintenance job scores, when an asset is at risk, and the order it opens then."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scoring: ScoringConfig
    failure_prob: float = Field(0.5, ge=0.0, le=1.0, description="At or above this an asset is at risk.")
    cause: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[^:]+$",
        description="Start of the order's reason; one open order per asset and cause. Default: from the kind.",
    )  # fmt: skip
    erp_url: str | None = Field(None, description="ERP base URL (FACTORY_ERP_URL); none: score only.")
    api_key: SecretStr | None = Field(None, description="ERP API key of role service (FACTORY_ERP_API_KEY).")
    warehouse: str = Field("MAIN", min_length=1, description="Code of the warehouse the parts are reserved in.")
    priority: Priority = "high"
    urgent_at: float = Field(0.9, ge=0.0, le=1.0, description="Priority urgent at or above this probability.")
    spare_parts: dict[str, list[SparePart]] = Field(default_factory=dict, description="Asset name → parts.")
    timeout_s: float = Field(10.0, gt=0, description="Per ERP request.")

    def reason_cause(self) -> str:
        return self.cause or f"predicted failure [{self.scoring.kind}]"


def load_config(path: Path, *, erp_url: str | None = None, api_key: SecretStr | None = None) -> MaintenanceJobConfig:
    """The job's configuration from its YAML file; ``erp_url`` and ``api_key`` fill in what it leaves out."""
    config = load_yaml_model(path, MaintenanceJobConfig)
    update: dict[str, Any] = {}
    if config.erp_url is None and erp_url:
        update["erp_url"] = erp_url
    if config.api_key is None and api_key is not None:
        update["api_key"] = api_key
    return config.model_copy(update=update) if update else config


def _detail(health: AssetHealth, config: MaintenanceJobConfig) -> str:
    seconds = health.rul * config.scoring.cycle_seconds
    left = f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds:.0f} s"
    return (
        f"failure probability {health.failure_prob:.2f}, RUL {left}"
        f" (model version {health.model_version}, {health.time:%Y-%m-%d %H:%M} UTC)"
    )


async def _open_orders(
    risky: list[AssetHealth], config: MaintenanceJobConfig
) -> tuple[list[OpenResult], dict[str, list[str]], list[str]]:
    """Each risky asset's order (opened, or the one open already), the draft purchase orders
    raised for the parts each waits for (order number -> purchase order numbers), and failures."""
    if config.erp_url is None or config.api_key is None:
        raise WorkOrderError("no ERP configured")
    results: list[OpenResult] = []
    requisitions: dict[str, list[str]] = {}
    failures: list[str] = []
    async with WorkOrderClient(config.erp_url, config.api_key.get_secret_value(), timeout_s=config.timeout_s) as erp:
        for health in risky:
            priority = "urgent" if health.failure_prob >= config.urgent_at else config.priority
            parts = config.spare_parts.get(health.asset, [])
            detail = _detail(health, config)
            try:
                opened = await erp.open(health.site, health.asset, config.reason_cause(), detail, priority=priority,
                                        warehouse=config.warehouse, parts=parts)  # fmt: skip
                results.append(opened)
                if opened.backordered:
                    requisitions[opened.number] = await erp.requisition(opened, config.warehouse)
            except WorkOrderError as exc:  # the other assets still get their orders
                log.error("maintenance work order for %s at %s: %s", health.asset, health.site, exc)
                failures.append(str(exc))
    return results, requisitions, failures


async def run(conn: Any, config: MaintenanceJobConfig) -> dict[str, Any]:
    """One run: score, then open the orders the risky assets need. Raises WorkOrderError if one could not be opened."""
    try:
        health = await score_live(conn, config.scoring)
    except RegistryError as exc:  # no model promoted yet: nothing to score with
        log.warning("maintenance scoring: %s", exc)
        return {"skipped": str(exc)}
    risky = at_risk(health, failure_prob=config.failure_prob)
    summary: dict[str, Any] = {"scored": len(health), "at_risk": [h.asset for h in risky]}
    if not risky:
        return summary
    if config.erp_url is None or config.api_key is None:
        log.warning("maintenance: %d asset(s) at risk, but no ERP is configured (FACTORY_ERP_URL, FACTORY_ERP_API_KEY)",
                    len(risky))  # fmt: skip
        summary["work_orders"] = "ERP not configured"
        return summary
    results, requisitions, failures = await _open_orders(risky, config)
    summary["opened"] = [r.number for r in results if r.opened]
    summary["already_open"] = [r.number for r in results if not r.opened]
    if waiting := {r.number: {sku: str(q) for sku, q in r.backordered.items()} for r in results if r.backordered}:
        summary["backordered"] = waiting
        summary["requisitions"] = requisitions
    if failures:
        raise WorkOrderError(f"{len(failures)} work order(s) not opened: " + "; ".join(failures))
    return summary
