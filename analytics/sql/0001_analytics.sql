-- Analytics schema, owned by analytics: anomaly scores and episodes, the live detectors'
-- state, and the outbox of anomaly events. Same on plain PostgreSQL and TimescaleDB.
CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per scored point. detector 'multivariate' scores a whole asset (tag_id NULL,
-- score = distance / alarm line, details.contributions = per-tag split of the score);
-- 'stuck', 'range' and 'spike' are the per-tag checks (rows only when they fire).
CREATE TABLE analytics.anomaly (
    time       timestamptz NOT NULL,
    site       text NOT NULL,
    asset      text NOT NULL,
    tag_id     integer,
    detector   text NOT NULL,
    score      double precision NOT NULL,
    is_anomaly boolean NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT anomaly_key UNIQUE NULLS NOT DISTINCT (asset, detector, tag_id, site, time)
);
CREATE INDEX anomaly_time_idx ON analytics.anomaly (time);
CREATE INDEX anomaly_flagged_idx ON analytics.anomaly (asset, time) WHERE is_anomaly;

-- An episode runs from the first anomalous point to the point the detector lets go;
-- its start and end are the two events published for it.
CREATE TABLE analytics.anomaly_episode (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site       text NOT NULL,
    asset      text NOT NULL,
    tag_id     integer,
    detector   text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    peak_score double precision NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX anomaly_episode_open_idx ON analytics.anomaly_episode (site, asset, detector, coalesce(tag_id, 0))
    WHERE ended_at IS NULL;
CREATE INDEX anomaly_episode_started_idx ON analytics.anomaly_episode (started_at);

-- What the live job knows about each asset between runs: the trained model, the
-- filters' and episodes' state, and how far it has scored.
CREATE TABLE analytics.detector_state (
    site          text NOT NULL,
    asset         text NOT NULL,
    tag_ids       integer[] NOT NULL,
    model         jsonb NOT NULL,
    stream        jsonb NOT NULL,
    checks        jsonb NOT NULL DEFAULT '{}',
    healthy_from  timestamptz NOT NULL,
    healthy_to    timestamptz NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    scored_until  timestamptz NOT NULL,
    PRIMARY KEY (site, asset)
);

-- Events written in the scoring transaction, relayed to factory/v1/events/{kind} after it
-- commits: at least once, in id order.
CREATE TABLE analytics.outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON analytics.outbox (id) WHERE published_at IS NULL;
