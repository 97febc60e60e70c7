-- ERP schema, owned by erp_api: the company, users and API keys, idempotency records and
-- the outbox. Domain tables follow in 0002..0006.
CREATE SCHEMA IF NOT EXISTS erp;

-- One ledger currency per deployment: every money amount the API accepts is in it.
CREATE TABLE erp.company (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    name     text NOT NULL,
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$')
);
INSERT INTO erp.company (name, currency) VALUES ('Factory', 'EUR');

CREATE TABLE erp.app_user (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL CONSTRAINT app_user_username_key UNIQUE
                  CHECK (username ~ '^[a-z0-9][a-z0-9_.@-]{0,63}$'),
    role          text NOT NULL CHECK (role IN ('admin', 'planner', 'accountant', 'operator', 'service')),
    password_hash text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- API keys are long random secrets: a SHA-256 digest is enough to store them (no
-- dictionary to attack), and it keeps the per-request lookup one index probe.
CREATE TABLE erp.api_key (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CONSTRAINT api_key_name_key UNIQUE,
    prefix     text NOT NULL,
    key_hash   bytea NOT NULL CONSTRAINT api_key_hash_key UNIQUE,
    role       text NOT NULL CHECK (role IN ('admin', 'planner', 'accountant', 'operator', 'service')),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- A POST with an Idempotency-Key records its response in the same transaction as its
-- effect; a replay returns it, a different request under the same key is refused.
CREATE TABLE erp.idempotency_key (
    principal    text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    status       smallint,
    body         bytea,
    headers      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

-- Every state change writes its event here in the same transaction; the relay publishes
-- rows in id order to factory/v1/events/{kind} and stamps published_at.
CREATE TABLE erp.outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type text NOT NULL,
    aggregate_id   bigint NOT NULL,
    kind           text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished_idx ON erp.outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_aggregate_idx ON erp.outbox (aggregate_type, aggregate_id, id);

CREATE FUNCTION erp.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('erp_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON erp.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION erp.outbox_notify();

-- Ledgers (stock movements, journal lines) are append-only.
CREATE FUNCTION erp.forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;
