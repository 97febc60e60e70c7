"""Grafana dashboards as code: plant overview, asset detail, maintenance, ERP, platform health.

``export`` writes them with Grafana's provisioning files; ``check_dashboards`` runs every
panel query against a real database (Grafana itself is not needed for that). Names load
on first use: ``dashboards.cli`` is imported by the ``factory`` command on the edge too,
where psycopg must never be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.lazy import lazy_exports

if TYPE_CHECKING:
    from dashboards.catalog import DASHBOARDS, FOLDER
    from dashboards.check import DashboardCheckError, QueryResult, check_dashboards
    from dashboards.export import export
    from dashboards.macros import MacroError, TimeRange, expand
    from dashboards.model import Annotation, Dashboard, Panel, Variable

_HOME = {
    "DASHBOARDS": "catalog", "FOLDER": "catalog", "DashboardCheckError": "check", "QueryResult": "check",
    "check_dashboards": "check", "export": "export", "MacroError": "macros", "TimeRange": "macros",
    "expand": "macros", "Annotation": "model", "Dashboard": "model", "Panel": "model", "Variable": "model",
}  # fmt: skip

__all__ = [
    "DASHBOARDS",
    "FOLDER",
    "Annotation",
    "Dashboard",
    "DashboardCheckError",
    "MacroError",
    "Panel",
    "QueryResult",
    "TimeRange",
    "Variable",
    "check_dashboards",
    "expand",
    "export",
]


__getattr__ = lazy_exports(__name__, {name: f"dashboards.{home}" for name, home in _HOME.items()})
