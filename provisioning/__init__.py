"""Provisioning: database migrations, device identities, the broker's password and ACL files, Grafana."""

from provisioning.migrate import Migration, MigrationError, migrate, plan

__all__ = ["Migration", "MigrationError", "migrate", "plan"]
