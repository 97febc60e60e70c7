-- The alert bridge's own state: every alert it has raised, firing (ends_at NULL) or
-- resolved, keyed by its label set. It survives a restart, so the bridge re-posts the same
-- alerts with the same start (Alertmanager sees nothing new) and never loses a resolve; a
-- resolved alert is kept (purged after a week), so a redelivered "opened" event of an
-- episode that is over does not raise it again.
CREATE SCHEMA IF NOT EXISTS alerting;

CREATE TABLE IF NOT EXISTS alerting.alert (
    fingerprint text PRIMARY KEY,          -- sha256 of the sorted label set
    labels jsonb NOT NULL,
    annotations jsonb NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz,                   -- NULL: firing
    posted boolean NOT NULL DEFAULT false, -- Alertmanager has taken its current state
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What the re-post loop reads: the firing alerts, and resolves Alertmanager has not taken yet.
CREATE INDEX IF NOT EXISTS alert_pending ON alerting.alert (fingerprint) WHERE ends_at IS NULL OR NOT posted;
