-- Idempotency-Key for POST /setpoints. The route waits seconds for a device and holds no
-- transaction (nor pooled connection) meanwhile, so its key cannot be claimed inside the
-- effect's transaction as the other commands claim theirs: it is claimed in a short
-- transaction of its own (status NULL while the device is asked), then, in another, the
-- reply is recorded with the audit row, or the claim is deleted when nothing was written
-- (no broker, no reply) so that a retry asks again. A claim is named by its created_at:
-- a retry that takes over a stale claim stamps a new one, and the process that made the old
-- claim can then neither record nor release it.

-- state 'claimed': the key is the caller's (claimed_at names the claim); 'replay': the
-- recorded reply (status, body, headers); 'in_progress': another request holds it and is
-- within p_stale of its claim. A claim older than p_stale without a reply is taken over:
-- the process that made it stopped while it waited. A different request under the key is
-- refused by erp.claim_key (409 idempotency-key-reused).
CREATE FUNCTION erp.claim_key_outside(
    p_principal text, p_key text, p_hash bytea, p_stale interval,
    OUT state text, OUT claimed_at timestamptz, OUT status int, OUT body text, OUT headers jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    found_row erp.idempotency_key;
BEGIN
    LOOP
        found_row := erp.claim_key(p_principal, p_key, p_hash);
        IF found_row.principal IS NULL THEN
            state := 'claimed';
            claimed_at := now();
            RETURN;
        END IF;
        IF found_row.status IS NOT NULL THEN
            state := 'replay';
            status := found_row.status;
            body := convert_from(found_row.body, 'UTF8');
            headers := found_row.headers;
            RETURN;
        END IF;
        IF found_row.created_at >= now() - p_stale THEN
            state := 'in_progress';
            claimed_at := found_row.created_at;
            RETURN;
        END IF;
        UPDATE erp.idempotency_key k SET created_at = now()
         WHERE k.principal = p_principal AND k.key = p_key AND k.status IS NULL
           AND k.created_at = found_row.created_at;
        IF FOUND THEN
            state := 'claimed';
            claimed_at := now();
            RETURN;
        END IF;
        -- recorded, released or taken over in between: look again
    END LOOP;
END $$;

-- The reply of a claim made by erp.claim_key_outside; false when the claim is no longer
-- this one's (taken over as stale).
CREATE FUNCTION erp.record_key_outside(
    p_principal text, p_key text, p_claimed timestamptz, p_status int, p_body text, p_headers jsonb)
RETURNS boolean LANGUAGE sql AS $$
    WITH kept AS (
        UPDATE erp.idempotency_key SET status = p_status, body = convert_to(p_body, 'UTF8'), headers = p_headers
         WHERE principal = p_principal AND key = p_key AND status IS NULL AND created_at = p_claimed
        RETURNING 1)
    SELECT EXISTS (SELECT FROM kept)
$$;

-- Nothing was done under the claim: the key is free again. False when the claim is no
-- longer this one's.
CREATE FUNCTION erp.release_key_outside(p_principal text, p_key text, p_claimed timestamptz)
RETURNS boolean LANGUAGE sql AS $$
    WITH freed AS (
        DELETE FROM erp.idempotency_key
         WHERE principal = p_principal AND key = p_key AND status IS NULL AND created_at = p_claimed
        RETURNING 1)
    SELECT EXISTS (SELECT FROM freed)
$$;
