-- Write-backs: every reply a device sent on its cmd/reply topic, one row each, kept as the
-- record of who asked which device to write which tag, with what value, and what came of it
-- (docs/ingest.md, "Write-back record"). The reply alone carries all of it (factory.commands).
--
-- Append-only: no role may change or delete a row (the triggers below; only the table's
-- owner, the migrating role, could disable them). The table is outside retention on purpose:
-- one row per write-back is small, and a record that expires is no record.
CREATE TABLE telemetry.write_back (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time         timestamptz NOT NULL,             -- the reply's ts: when the device answered
    device_id    integer NOT NULL REFERENCES telemetry.device (id),
    request_id   text,                             -- null: the request's id could not be read
    tag          text,                             -- null: not readable from a bad request
    value        jsonb,                            -- the value asked for: number, boolean or text
    requested_by text,                             -- the request's `by`; null from senders without it
    ok           boolean NOT NULL,
    error        text CHECK (error IN ('bad_request', 'unknown_tag', 'not_writable', 'wrong_type',
                                       'out_of_range', 'device_error')),
    reason       text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ok = (error IS NULL))
);
-- At-least-once delivery: a redelivered reply is the same request of the same device.
CREATE UNIQUE INDEX write_back_request_key ON telemetry.write_back (device_id, request_id);
-- A reply without an id (a request too broken to read one) repeats with its own ts.
CREATE UNIQUE INDEX write_back_unnamed_key ON telemetry.write_back (device_id, time) WHERE request_id IS NULL;
CREATE INDEX write_back_time_idx ON telemetry.write_back (time);
CREATE INDEX write_back_tag_idx ON telemetry.write_back (device_id, tag, time);

CREATE FUNCTION telemetry.write_back_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'telemetry.write_back is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER write_back_append_only BEFORE UPDATE OR DELETE ON telemetry.write_back
    FOR EACH ROW EXECUTE FUNCTION telemetry.write_back_is_append_only();
CREATE TRIGGER write_back_no_truncate BEFORE TRUNCATE ON telemetry.write_back
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry.write_back_is_append_only();
