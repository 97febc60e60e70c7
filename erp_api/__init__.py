"""The ERP API (FastAPI) for planners and accountants.

``create_app`` is loaded on first use: ``erp_api.cli`` is imported by the ``factory``
command on the edge too, where FastAPI and psycopg must never be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.lazy import lazy_exports

if TYPE_CHECKING:
    from erp_api.app import create_app

__all__ = ["create_app"]


__getattr__ = lazy_exports(__name__, {"create_app": "erp_api.app"})
