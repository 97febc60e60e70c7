-- TimescaleDB: rollups are continuous aggregates (real-time), refreshed by ingest's
-- maintenance loop with refresh_continuous_aggregate.
CREATE MATERIALIZED VIEW telemetry.sample_1m WITH (timescaledb.continuous) AS
SELECT time_bucket('1 minute', time) AS bucket, tag_id,
       avg(value) AS avg, min(value) AS min, max(value) AS max,
       last(value, time) AS last, count(value) AS count
FROM telemetry.sample GROUP BY 1, 2 WITH NO DATA;

CREATE MATERIALIZED VIEW telemetry.sample_1h WITH (timescaledb.continuous) AS
SELECT time_bucket('1 hour', time) AS bucket, tag_id,
       avg(value) AS avg, min(value) AS min, max(value) AS max,
       last(value, time) AS last, count(value) AS count
FROM telemetry.sample GROUP BY 1, 2 WITH NO DATA;
