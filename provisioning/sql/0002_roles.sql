-- Database roles: one writer role per service, and a read-only role for Grafana.
-- Group roles (NOLOGIN), cluster-wide; log-in users are made members of them, e.g.
--   CREATE USER grafana PASSWORD '...' IN ROLE factory_grafana;
--   CREATE USER ingest  PASSWORD '...' IN ROLE factory_ingest;
-- Runs after every schema exists (provisioning is last in the migration order).
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['factory_ingest', 'factory_erp', 'factory_analytics', 'factory_maintenance',
                                'factory_provisioning', 'factory_grafana']
    LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database of this cluster created it already
        END;
    END LOOP;
END
$$;

-- Everyone in the platform may read every part's schema (Grafana, analytics reading
-- telemetry, maintenance reading telemetry); each owner writes only its own.
GRANT USAGE ON SCHEMA telemetry, erp, analytics, maintenance, provisioning
    TO factory_ingest, factory_erp, factory_analytics, factory_maintenance, factory_provisioning, factory_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA telemetry, erp, analytics, maintenance
    TO factory_ingest, factory_erp, factory_analytics, factory_maintenance, factory_grafana;
ALTER DEFAULT PRIVILEGES IN SCHEMA telemetry, erp, analytics, maintenance
    GRANT SELECT ON TABLES TO factory_ingest, factory_erp, factory_analytics, factory_maintenance, factory_grafana;

GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA telemetry TO factory_ingest;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA erp TO factory_erp;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO factory_analytics;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA maintenance TO factory_maintenance, factory_analytics;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA provisioning TO factory_provisioning;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA telemetry TO factory_ingest;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA erp TO factory_erp;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA analytics TO factory_analytics;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA maintenance TO factory_maintenance, factory_analytics;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA provisioning TO factory_provisioning;
-- Ingest creates daily partitions and temporary staging tables.
GRANT CREATE ON SCHEMA telemetry TO factory_ingest;
ALTER DEFAULT PRIVILEGES IN SCHEMA telemetry GRANT INSERT, UPDATE, DELETE ON TABLES TO factory_ingest;
