"""SQL migrations of the ``alerting`` schema (applied by provisioning.migrate)."""
