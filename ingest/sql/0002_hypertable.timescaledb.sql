-- TimescaleDB: samples in a hypertable (daily chunks), in the columnstore segmented by tag.
-- Kept small on purpose: CI runs plain PostgreSQL, so this file is read, not run, there
-- (tests/ingest/test_timescale.py runs it by hand). Columnstore conversion and retention are
-- driven by ingest's maintenance loop (ingest/timescale.py) with the ages from its settings,
-- not by TimescaleDB's background jobs.
--
-- The current names (TimescaleDB 2.18 renamed compression to columnstore; the old names go in
-- 3.0), the old ones only for an older extension. This file replaced 0002_sample.timescaledb.sql,
-- which used the old names: a database that ran it keeps the same settings, and the runner does
-- not run a version again that was applied under another file name.
CREATE TABLE telemetry.sample (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   double precision,
    quality smallint NOT NULL DEFAULT 0 CHECK (quality IN (0, 1, 2)),
    PRIMARY KEY (tag_id, time)
);
DO $$
DECLARE
    version integer[] := (SELECT string_to_array(split_part(extversion, '-', 1), '.')::integer[]
                            FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF version >= ARRAY[2, 18] THEN
        PERFORM create_hypertable('telemetry.sample', by_range('time', interval '1 day'));
        ALTER TABLE telemetry.sample SET (
            timescaledb.enable_columnstore = true,
            timescaledb.segmentby = 'tag_id',
            timescaledb.orderby = 'time DESC'
        );
    ELSE
        PERFORM create_hypertable('telemetry.sample', 'time', chunk_time_interval => interval '1 day');
        ALTER TABLE telemetry.sample SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'tag_id',
            timescaledb.compress_orderby = 'time DESC'
        );
    END IF;
END $$;
