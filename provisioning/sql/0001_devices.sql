-- Provisioning schema (created by the migration runner, which keeps schema_migration in it).
-- Credentials are stored only as hashes, in Mosquitto's own PBKDF2-SHA512 format ($7$...),
-- so the broker's password file is written straight from these rows.
CREATE TABLE provisioning.device (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text NOT NULL CHECK (site ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name          text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    password_hash text NOT NULL CHECK (password_hash LIKE '$7$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    UNIQUE (site, name)
);

-- Cloud services that talk to the broker (ingest, the ERP outbox relay, analytics).
CREATE TABLE provisioning.service_account (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    password_hash text NOT NULL CHECK (password_hash LIKE '$7$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz NOT NULL DEFAULT now()
);
