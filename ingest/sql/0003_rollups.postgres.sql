-- Plain PostgreSQL: rollups are tables that ingest keeps fresh (ingest/rollup.py).
-- Column names match the TimescaleDB continuous aggregates so dashboards work on both.
-- count is the number of non-null values, so hourly figures derive exactly from minutes.
CREATE TABLE telemetry.sample_1m (
    bucket timestamptz NOT NULL,
    tag_id integer NOT NULL,
    avg    double precision,
    min    double precision,
    max    double precision,
    last   double precision,
    count  bigint NOT NULL,
    PRIMARY KEY (tag_id, bucket)
);
CREATE INDEX sample_1m_bucket_idx ON telemetry.sample_1m (bucket);

CREATE TABLE telemetry.sample_1h (LIKE telemetry.sample_1m INCLUDING ALL);

-- Minutes that received samples since the last refresh. Ingest adds them in the same
-- transaction as the samples, so nothing written escapes the rollups.
CREATE TABLE telemetry.rollup_pending (
    bucket timestamptz PRIMARY KEY
);
