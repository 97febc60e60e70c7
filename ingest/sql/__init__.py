"""SQL migrations of the telemetry schema (applied by provisioning.migrate)."""
