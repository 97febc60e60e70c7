"""SQL migrations of the ``erp`` schema (applied by provisioning.migrate)."""
