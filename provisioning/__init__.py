"""Provisioning: database migrations, device identities, the broker's password and ACL files.

Loaded lazily: ``provisioning.cli`` is imported by the ``factory`` command on the edge
too, where psycopg must never be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.lazy import lazy_exports

if TYPE_CHECKING:
    from provisioning.migrate import Migration, MigrationError, migrate, plan

__all__ = ["Migration", "MigrationError", "migrate", "plan"]


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "provisioning.migrate"))
