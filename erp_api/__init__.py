"""The ERP API (FastAPI) for planners and accountants."""

from erp_api.app import create_app

__all__ = ["create_app"]
