-- Telemetry schema, owned by ingest: the tables that are the same on plain PostgreSQL and
-- TimescaleDB. telemetry.sample and its rollups differ by flavor (0002, 0003).
CREATE SCHEMA IF NOT EXISTS telemetry;

CREATE TABLE telemetry.device (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site       text NOT NULL,
    name       text NOT NULL,
    status     text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'online', 'offline')),
    status_at  timestamptz,
    last_seen  timestamptz,
    agent      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site, name)
);

CREATE TABLE telemetry.tag (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   integer NOT NULL REFERENCES telemetry.device (id),
    name        text NOT NULL,
    asset       text NOT NULL,
    unit        text,
    data_type   text NOT NULL DEFAULT 'number',
    description text,
    source      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, name)
);
CREATE INDEX tag_asset_idx ON telemetry.tag (asset);

CREATE TABLE telemetry.event (
    time      timestamptz NOT NULL,
    device_id integer NOT NULL REFERENCES telemetry.device (id),
    kind      text NOT NULL,
    data      jsonb NOT NULL DEFAULT '{}',
    UNIQUE (device_id, kind, time)
);

CREATE TABLE telemetry.dead_letter (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX dead_letter_received_idx ON telemetry.dead_letter (received_at);
