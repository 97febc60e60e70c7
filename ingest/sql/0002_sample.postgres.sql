-- Plain PostgreSQL: samples in daily range partitions (UTC days), created on demand and
-- ahead of time by ingest, dropped whole by retention.
-- No foreign key to tag: it would cost every COPY a lookup, and ingest only writes tag ids
-- it has just resolved.
CREATE TABLE telemetry.sample (
    time    timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    value   double precision,
    quality smallint NOT NULL DEFAULT 0 CHECK (quality IN (0, 1, 2)),
    PRIMARY KEY (tag_id, time)
) PARTITION BY RANGE (time);

-- Rollup refresh and retention look rows up by time alone; a BRIN index serves that for
-- append-mostly data at almost no cost to ingest (the key index leads with tag_id).
CREATE INDEX sample_time_brin ON telemetry.sample USING brin (time);

-- Creates the partition holding one UTC day; true if it was created now. Concurrent callers
-- serialize on an advisory lock, so two ingest workers never race on the same day.
CREATE FUNCTION telemetry.ensure_sample_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'sample_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass('telemetry.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('telemetry.sample partitions'));
    IF to_regclass('telemetry.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE telemetry.%I PARTITION OF telemetry.sample FOR VALUES FROM (%L) TO (%L)',
        part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    RETURN true;
END
$$;

-- Drops the partitions of days before `before` (UTC); returns their names.
CREATE FUNCTION telemetry.drop_sample_partitions(before date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry.sample'::regclass
          AND c.relname ~ '^sample_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') < before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE telemetry.%I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;
