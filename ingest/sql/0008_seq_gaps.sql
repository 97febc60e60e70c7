-- Batch numbers (docs/ingest.md, "Lost batches"): every telemetry batch carries its device's
-- `seq`, one more than the one before (a resent batch keeps its number). Ingest records the
-- highest number each device has delivered and the numbers below it that have not arrived
-- yet. Batches may arrive out of order (several ingest workers, redelivery), so a missing
-- number is only pending at first; once it has been missing for the grace period
-- (telemetry.declare_seq_gaps) it is a gap: a telemetry.event of kind seq_gap with the
-- missing ranges, and the pending rows go.
--
-- A device whose numbering starts over (its buffer was replaced) sends a number far below
-- its highest that is not pending: that is a restart of the count (event seq_reset), not a gap.

CREATE TABLE telemetry.device_seq (
    device_id  integer PRIMARY KEY REFERENCES telemetry.device (id),
    high       bigint NOT NULL,                    -- the highest batch number delivered
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE telemetry.seq_missing (
    device_id integer NOT NULL REFERENCES telemetry.device (id),
    first     bigint NOT NULL,
    last      bigint NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),  -- when a later number arrived without these
    PRIMARY KEY (device_id, first),
    CHECK (first <= last)
);
CREATE INDEX seq_missing_since_idx ON telemetry.seq_missing (since);

-- Record the batch numbers one flush stored or dead-lettered: p_device[i] sent p_seq[i].
-- Devices are handled in id order (their device_seq rows locked in that order, so that
-- workers flushing at the same time never deadlock). A device whose numbers continue its
-- count costs one UPDATE.
CREATE FUNCTION telemetry.track_seqs(p_device integer[], p_seq bigint[], p_reset_below bigint DEFAULT 1000)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d integer;
    seqs numeric[];  -- numeric: a number may be 2^63 - 1, and one more must not overflow
    s numeric;
    prev numeric;
    top numeric;
    restart numeric;
    gap telemetry.seq_missing;
BEGIN
    FOR d, seqs IN SELECT u.device, array_agg(DISTINCT u.seq::numeric ORDER BY u.seq::numeric)
                     FROM unnest(p_device, p_seq) AS u(device, seq) GROUP BY u.device ORDER BY u.device
    LOOP
        INSERT INTO telemetry.device_seq (device_id, high) VALUES (d, seqs[cardinality(seqs)]::bigint)
        ON CONFLICT (device_id) DO NOTHING;
        IF FOUND THEN  -- the first batches of a device: only holes between them are missing
            top := seqs[1] - 1;
        ELSE
            SELECT high::numeric INTO top FROM telemetry.device_seq WHERE device_id = d FOR UPDATE;
            IF seqs[1] = top + 1 AND seqs[cardinality(seqs)] = top + cardinality(seqs) THEN
                UPDATE telemetry.device_seq SET high = seqs[cardinality(seqs)]::bigint, updated_at = now()
                 WHERE device_id = d;
                CONTINUE;  -- the count goes on without a hole: the common case
            END IF;
            SELECT min(x) INTO restart FROM unnest(seqs) x
             WHERE x < top - p_reset_below
               AND NOT EXISTS (SELECT 1 FROM telemetry.seq_missing m WHERE m.device_id = d AND x BETWEEN m.first AND m.last);
            IF restart IS NOT NULL THEN
                INSERT INTO telemetry.event (time, device_id, kind, data)
                VALUES (now(), d, 'seq_reset', jsonb_build_object('from', top, 'to', restart))
                ON CONFLICT DO NOTHING;
                DELETE FROM telemetry.seq_missing WHERE device_id = d;
                seqs := ARRAY(SELECT x FROM unnest(seqs) x WHERE x < top - p_reset_below ORDER BY x);
                top := seqs[1] - 1;
            END IF;
        END IF;
        prev := top;
        FOR s IN SELECT unnest(seqs) LOOP
            IF s <= top THEN  -- a late one: it leaves the pending range it was in, if any
                DELETE FROM telemetry.seq_missing
                 WHERE device_id = d AND first <= s AND last >= s
                RETURNING * INTO gap;
                IF FOUND THEN
                    INSERT INTO telemetry.seq_missing (device_id, first, last, since)
                    SELECT d, r.first::bigint, r.last::bigint, gap.since
                      FROM (VALUES (gap.first::numeric, s - 1), (s + 1, gap.last::numeric)) AS r(first, last)
                     WHERE r.first <= r.last;
                END IF;
            ELSE
                IF s > prev + 1 THEN
                    INSERT INTO telemetry.seq_missing (device_id, first, last) VALUES (d, (prev + 1)::bigint, (s - 1)::bigint);
                END IF;
                prev := s;
            END IF;
        END LOOP;
        UPDATE telemetry.device_seq SET high = greatest(prev, top)::bigint, updated_at = now() WHERE device_id = d;
    END LOOP;
END $$;

-- Numbers missing for longer than p_grace become gaps: one seq_gap event per device with its
-- ranges and how many batches they hold, returned per device. Several workers may call it at
-- once: each pending range is declared by the one whose DELETE took it.
CREATE FUNCTION telemetry.declare_seq_gaps(p_grace interval)
RETURNS TABLE (site text, device text, batches bigint) LANGUAGE sql AS $$
    WITH due AS (
        DELETE FROM telemetry.seq_missing WHERE since < now() - p_grace RETURNING *
    ), per_device AS (
        SELECT device_id, jsonb_agg(jsonb_build_array(first, last) ORDER BY first) AS ranges,
               sum(last - first + 1)::bigint AS batches, min(since) AS since
          FROM due GROUP BY device_id
    ), recorded AS (
        INSERT INTO telemetry.event (time, device_id, kind, data)
        SELECT now(), device_id, 'seq_gap',
               jsonb_build_object('ranges', ranges, 'batches', batches, 'missing_since', since)
          FROM per_device
        ON CONFLICT DO NOTHING
    )
    SELECT d.site, d.name, p.batches FROM per_device p JOIN telemetry.device d ON d.id = p.device_id
     ORDER BY d.site, d.name
$$;
