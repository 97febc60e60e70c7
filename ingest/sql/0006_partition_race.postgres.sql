-- The advisory lock alone did not make ensure_sample_partition safe: a caller that waited on
-- it looked the partition up again through its catalog cache, which had not yet heard of the
-- partition the other caller had just committed, and CREATE TABLE then failed with
-- duplicate_table (two ingest workers starting on a new day). The creation now treats that
-- error as "already there".
CREATE OR REPLACE FUNCTION telemetry.ensure_sample_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'sample_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass('telemetry.' || part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('telemetry.sample partitions'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE telemetry.%I PARTITION OF telemetry.sample FOR VALUES FROM (%L) TO (%L)',
            part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    RETURN true;
END
$$;
