-- Maintenance schema, owned by maintenance_models: the model registry and asset health.
CREATE SCHEMA IF NOT EXISTS maintenance;

-- One row per trained model. `artifact` is the pickled model; it is only ever unpickled
-- after its SHA-256 matches `artifact_sha256` (and then only model classes), so this table
-- must be writable by the platform alone.
CREATE TABLE maintenance.model (
    version         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    trained_at      timestamptz NOT NULL DEFAULT now(),
    training_data   jsonb NOT NULL,
    config          jsonb NOT NULL,
    metrics         jsonb NOT NULL DEFAULT '{}',
    artifact        bytea NOT NULL,
    artifact_sha256 text NOT NULL CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    code_version    text NOT NULL
);
CREATE INDEX model_kind_idx ON maintenance.model (kind, version);

-- Promotion history of each kind. The newest row that is not rolled back names the live
-- model; rolling back marks that row and the one before it becomes live again.
CREATE TABLE maintenance.promotion (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL,
    version        integer NOT NULL REFERENCES maintenance.model (version),
    promoted_at    timestamptz NOT NULL DEFAULT now(),
    rolled_back_at timestamptz
);
CREATE INDEX promotion_kind_idx ON maintenance.promotion (kind, id) WHERE rolled_back_at IS NULL;

CREATE VIEW maintenance.live_model AS
SELECT DISTINCT ON (kind) kind, version, promoted_at
FROM maintenance.promotion
WHERE rolled_back_at IS NULL
ORDER BY kind, id DESC;

-- What the scoring job concluded about each asset, each time it ran.
CREATE TABLE maintenance.asset_health (
    time          timestamptz NOT NULL,
    asset         text NOT NULL,
    model_version integer NOT NULL REFERENCES maintenance.model (version),
    rul           double precision NOT NULL CHECK (rul >= 0),
    failure_prob  double precision NOT NULL CHECK (failure_prob BETWEEN 0 AND 1),
    PRIMARY KEY (asset, time, model_version)
);
CREATE INDEX asset_health_time_idx ON maintenance.asset_health (time);
