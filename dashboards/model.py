"""Dashboards as typed Python objects, rendered to Grafana's dashboard JSON.

A panel carries its SQL and the columns that SQL must return, so ``factory dashboards
check`` can run every query against a real database and catch a renamed column before
an operator sees an empty panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["DATASOURCE", "Annotation", "Dashboard", "Panel", "Variable"]

DATASOURCE: Final = {"type": "grafana-postgresql-datasource", "uid": "factory-pg"}
Kind = Literal["timeseries", "table", "stat", "bargauge"]
Format = Literal["time_series", "table"]
WIDTH: Final = 24


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    sql: str
    columns: tuple[str, ...]
    kind: Kind = "table"
    unit: str | None = None
    width: int = 12
    height: int = 8
    description: str = ""
    # Grafana's panel time override: ``time_from`` "6h" is the last 6 hours, "+24h" the next 24;
    # ``time_shift`` "12h" moves that range 12 hours back ("+36h" shifted "12h": 12 h back, 24 ahead).
    time_from: str | None = None
    time_shift: str | None = None
    overrides: tuple[dict[str, Any], ...] = ()  # Grafana field overrides (e.g. dashed lines for some series)

    @property
    def format(self) -> Format:
        return "time_series" if self.kind == "timeseries" else "table"

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit} if self.unit else {}
        overrides = {"timeFrom": self.time_from, "timeShift": self.time_shift}
        return {
            **{key: value for key, value in overrides.items() if value is not None},
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "fieldConfig": {"defaults": defaults, "overrides": list(self.overrides)},
            "options": {},
            "targets": [
                {
                    "refId": "A",
                    "datasource": DATASOURCE,
                    "editorMode": "code",
                    "format": self.format,
                    "rawQuery": True,
                    "rawSql": self.sql,
                }
            ],
        }


@dataclass(frozen=True, slots=True)
class Variable:
    """A query variable; panels use it as ``${name:sqlstring}`` (a quoted SQL literal)."""

    name: str
    label: str
    sql: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": self.sql,
            "query": self.sql,
            "refresh": 2,
            "sort": 1,
            "multi": False,
            "includeAll": False,
        }


@dataclass(frozen=True, slots=True)
class Annotation:
    """Time regions from SQL: columns ``time``, ``timeend`` and ``text``."""

    name: str
    sql: str
    color: str = "red"
    columns: tuple[str, ...] = ("time", "timeend", "text")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enable": True,
            "iconColor": self.color,
            "datasource": DATASOURCE,
            "target": {"refId": "Anno", "editorMode": "code", "format": "table", "rawQuery": True, "rawSql": self.sql},
        }


# The fastest refresh Grafana allows: its server's `[dashboards] min_refresh_interval` (5s
# unless set) must be this or less, or Grafana quietly slows these dashboards down to it.
# ``dashboards.export`` writes it into grafana.ini, deploy/docker-compose.yml into Grafana's
# environment. 2 s: a value change (or an order paid) shows on a live screen within 2 s.
MIN_REFRESH: Final = "2s"
REFRESH_CHOICES: Final = (MIN_REFRESH, "5s", "10s", "30s", "1m", "5m", "15m", "1h")


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    folder: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "10s"
    tags: tuple[str, ...] = field(default=("factory",))

    def to_json(self) -> dict[str, Any]:
        """Grafana's dashboard model; panels flow left to right, then down."""
        panels: list[dict[str, Any]] = []
        x = y = row_height = 0
        for number, panel in enumerate(self.panels, start=1):
            if x + panel.width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(panel.to_json(number, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        builtin = {
            "builtIn": 1,
            "name": "Annotations & Alerts",
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "type": "dashboard",
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": list(self.tags),
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "refresh": self.refresh,
            "timepicker": {"refresh_intervals": list(REFRESH_CHOICES)},
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "annotations": {"list": [builtin, *(a.to_json() for a in self.annotations)]},
            "panels": panels,
        }
