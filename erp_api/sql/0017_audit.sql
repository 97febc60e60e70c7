-- The audit trail: who changed what, when, in which request (docs/erp-api.md, "Audit trail").
--
-- One append-only row per change: every event a command writes to the outbox (its document
-- after the change is the row's detail), and every change to accounts and API keys
-- (erp.audit_note, called by erp_api.users in the change's transaction). The outbox is
-- purged once published; the trail is not, and no one may change or delete a row of it.
--
-- Who and which request reach the command functions through two settings local to the
-- command's transaction, set by erp.acting, which erp_api.idempotency wraps around the
-- principal argument of every command call: erp.f(erp.acting(principal, request id), ...).
-- The functions themselves are unchanged; erp.emit reads the settings.

ALTER TABLE erp.outbox ADD COLUMN actor text, ADD COLUMN request_id text;

CREATE TABLE erp.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,        -- a user, an API key's name, local:<os user> for the CLI, db:<role> otherwise
    request_id  text,                 -- the X-Request-Id the API answered with
    action      text NOT NULL,        -- the event kind (order.confirmed) or the account change (user.disabled)
    entity_type text NOT NULL,        -- order, invoice, stock, user, api_key, login_lock ...
    entity_id   text NOT NULL,
    event_id    bigint,               -- the outbox event, for changes that publish one
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_entity_idx ON erp.audit (entity_type, entity_id, id);
CREATE INDEX audit_actor_idx ON erp.audit (actor, id);
CREATE INDEX audit_request_idx ON erp.audit (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_at_idx ON erp.audit USING brin (at);

-- For every role: the service roles' grants cover the whole erp schema, and only the
-- table's owner (the migrating role) could disable these triggers.
CREATE FUNCTION erp.audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'erp.audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON erp.audit
    FOR EACH ROW EXECUTE FUNCTION erp.audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON erp.audit
    FOR EACH STATEMENT EXECUTE FUNCTION erp.audit_is_append_only();

-- Set who is acting for the rest of the transaction; returns the actor, so that it can stand
-- in for a command's principal argument (evaluated before the command runs).
CREATE FUNCTION erp.acting(p_actor text, p_request text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('erp.actor', coalesce(p_actor, ''), true),
            set_config('erp.request_id', coalesce(p_request, ''), true);
    RETURN p_actor;
END $$;

-- Who is acting: as erp.acting said, else the database role (a change made in SQL by hand).
CREATE FUNCTION erp.actor() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('erp.actor', true), ''), 'db:' || session_user)
$$;

CREATE FUNCTION erp.request_id() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('erp.request_id', true), '')
$$;

-- The event, with who caused it, and its audit row (same signature: every command uses it).
CREATE OR REPLACE FUNCTION erp.emit(p_type text, p_id bigint, p_kind text, p_payload json) RETURNS void
LANGUAGE sql AS $$
    WITH e AS (
        INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload, actor, request_id)
        VALUES (p_type, p_id, p_kind, p_payload::jsonb, erp.actor(), erp.request_id())
        RETURNING id, created_at, actor, request_id, payload
    )
    INSERT INTO erp.audit (at, actor, request_id, action, entity_type, entity_id, event_id, detail)
    SELECT created_at, actor, request_id, p_kind, p_type, p_id::text, id, payload FROM e
$$;

-- A change without an event (accounts, API keys, sign-in locks), in the caller's transaction.
CREATE FUNCTION erp.audit_note(p_actor text, p_request text, p_action text, p_type text, p_id text,
                               p_detail jsonb DEFAULT '{}') RETURNS void LANGUAGE sql AS $$
    INSERT INTO erp.audit (actor, request_id, action, entity_type, entity_id, detail)
    VALUES (p_actor, p_request, p_action, p_type, p_id, coalesce(p_detail, '{}'))
$$;

-- One record as GET /audit returns it (erp_api.schemas.audit.AuditRecordPublic).
CREATE FUNCTION erp.audit_doc(a erp.audit) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', a.id, 'at', erp.iso(a.at), 'actor', a.actor, 'request_id', a.request_id, 'action', a.action,
               'entity_type', a.entity_type, 'entity_id', a.entity_id, 'event_id', a.event_id, 'detail', a.detail)
$$;
