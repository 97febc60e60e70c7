"""SQL migrations of the analytics schema (applied by provisioning.migrate)."""
