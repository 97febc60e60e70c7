"""Grafana dashboards as code: plant overview, asset detail, maintenance, ERP, platform health.

``export`` writes them with Grafana's provisioning files; ``check_dashboards`` runs every
panel query against a real database (Grafana itself is not needed for that).
"""

from dashboards.catalog import DASHBOARDS, FOLDER
from dashboards.check import DashboardCheckError, QueryResult, check_dashboards
from dashboards.export import export
from dashboards.macros import MacroError, TimeRange, expand
from dashboards.model import Annotation, Dashboard, Panel, Variable

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
