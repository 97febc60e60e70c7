"""The report's figures as one JSON-ready object (``factory report ... --json``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any

from analytics.reports.figures import ReportData

__all__ = ["as_dict"]


def _plain(value: Any) -> Any:
    """Decimals as strings (exact, like the ERP's documents), times as ISO 8601, tuples as lists."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def as_dict(data: ReportData) -> dict[str, Any]:
    out: dict[str, Any] = _plain(dataclasses.asdict(data))
    for line in out["oee"]:
        line["losses"] = [{"reason": r, "stops": n, "seconds": s} for r, n, s in line["losses"]]
    for episode in out["episodes"]:
        episode["tags"] = [{"tag": t, "contribution": c} for t, c in episode["tags"]]
    for order in out["maintenance"]:
        order["backordered"] = [{"sku": sku, "quantity": q} for sku, q in order["backordered"]]
    return out
