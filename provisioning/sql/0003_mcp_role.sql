-- The MCP server's role (factory mcp serve): reads the plant and the ERP, writes nothing;
-- its changes go through the ERP's HTTP API. A log-in user joins it (docs/mcp.md), e.g.
--   CREATE USER mcp PASSWORD '...' IN ROLE factory_mcp;
--   ALTER ROLE mcp SET default_transaction_read_only = on;
-- The server also opens every transaction READ ONLY itself.
DO $$
BEGIN
    CREATE ROLE factory_mcp NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- another database of this cluster created it already
END
$$;

GRANT USAGE ON SCHEMA telemetry, erp, analytics, maintenance TO factory_mcp;
GRANT SELECT ON ALL TABLES IN SCHEMA telemetry, erp, analytics, maintenance TO factory_mcp;
ALTER DEFAULT PRIVILEGES IN SCHEMA telemetry, erp, analytics, maintenance GRANT SELECT ON TABLES TO factory_mcp;
-- What no assistant needs: password hashes, sessions, sign-in locks, stored replies, the artifacts.
REVOKE SELECT ON erp.app_user, erp.refresh_token, erp.login_guard, erp.idempotency_key FROM factory_mcp;
REVOKE SELECT ON maintenance.model FROM factory_mcp;
GRANT SELECT (version, kind, trained_at, metrics) ON maintenance.model TO factory_mcp;
