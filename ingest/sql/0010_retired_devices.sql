-- A retired device: `factory provision revoke` clears its retained status (an empty retained
-- message), and ingest records that as the status 'retired', so no reader of
-- telemetry.device (the alert bridge on a NATS cluster, the dashboards, the MCP tools) keeps
-- calling it offline.
ALTER TABLE telemetry.device DROP CONSTRAINT device_status_check;
ALTER TABLE telemetry.device
    ADD CONSTRAINT device_status_check CHECK (status IN ('unknown', 'online', 'offline', 'retired'));
