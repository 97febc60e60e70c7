-- Late data on TimescaleDB (docs/ingest.md, "Late data"). The continuous aggregates are
-- refreshed over the last couple of hours each upkeep cycle; a batch replayed from an edge
-- buffer after a longer outage lands before that window, and a refresh policy would not look
-- back that far either. So a flush that writes rows older than the window appends the hours
-- it touched here, in its own transaction, and the upkeep refreshes exactly those hours
-- (ingest/timescale.py), then deletes the rows it saw. Plain appends: a flush never waits.
CREATE TABLE telemetry.aggregate_pending (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket timestamptz NOT NULL  -- the start of an hour that got rows after its refresh
);
CREATE INDEX aggregate_pending_bucket_idx ON telemetry.aggregate_pending (bucket);

-- Real-time aggregation: a query over the aggregates adds what is not materialized yet
-- (off by default since TimescaleDB 2.13).
ALTER MATERIALIZED VIEW telemetry.sample_1m SET (timescaledb.materialized_only = false);
ALTER MATERIALIZED VIEW telemetry.sample_1h SET (timescaledb.materialized_only = false);
