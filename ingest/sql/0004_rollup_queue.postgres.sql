-- Pending minutes become an append-only queue. With a key on the minute, ingest's
-- INSERT ... ON CONFLICT had to wait whenever a refresh had claimed (deleted, not yet
-- committed) the same minute, so every flush touching that minute stalled for as long
-- as the refresh ran. Plain appends never wait; a refresh claims rows by id.
ALTER TABLE telemetry.rollup_pending DROP CONSTRAINT rollup_pending_pkey;
ALTER TABLE telemetry.rollup_pending ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE INDEX rollup_pending_bucket_idx ON telemetry.rollup_pending (bucket);
