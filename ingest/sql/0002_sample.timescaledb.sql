-- TimescaleDB: samples in a hypertable (daily chunks), compressed per tag.
-- Kept small on purpose: CI runs plain PostgreSQL, so this file is read, not run, there.
-- Compression and retention are driven by ingest's maintenance loop (ingest/timescale.py)
-- with the ages from its settings, not by TimescaleDB's background jobs.
CREATE TABLE telemetry.sample (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   double precision,
    quality smallint NOT NULL DEFAULT 0 CHECK (quality IN (0, 1, 2)),
    PRIMARY KEY (tag_id, time)
);
SELECT create_hypertable('telemetry.sample', 'time', chunk_time_interval => interval '1 day');
ALTER TABLE telemetry.sample SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tag_id',
    timescaledb.compress_orderby = 'time DESC'
);
