"""Provisioning: database migrations (``provisioning.migrate``), device identities, the broker's
password and ACL files, Grafana, the gateway's nginx config and TLS files."""

from provisioning.migrate import Migration, MigrationError, plan

__all__ = ["Migration", "MigrationError", "plan"]
