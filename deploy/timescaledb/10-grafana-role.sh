#!/bin/sh
# Runs once, when the database volume is first initialised (/docker-entrypoint-initdb.d),
# before `factory provision db`: the log-in role Grafana's datasource uses. It is only a
# member of factory_grafana, which the migrations grant read access to telemetry, erp,
# analytics and maintenance, and nothing else (provisioning/sql/0002_roles.sql).
set -eu
: "${FACTORY_GRAFANA_DB_PASSWORD:?set FACTORY_GRAFANA_DB_PASSWORD in .env}"
role="${FACTORY_GRAFANA_DB_USER:-grafana}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-factory}" \
    -v role="$role" -v password="$FACTORY_GRAFANA_DB_PASSWORD" <<'SQL'
DO $$ BEGIN CREATE ROLE factory_grafana NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE ROLE :"role" LOGIN PASSWORD :'password' IN ROLE factory_grafana;
SQL
