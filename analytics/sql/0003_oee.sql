-- OEE, owned by analytics: one row per line and bucket, for whole shifts (period 'shift')
-- and for each hour of a shift (period 'hour'), plus the stops behind the availability
-- loss, by reason, for a Pareto chart. Same on plain PostgreSQL and TimescaleDB.
CREATE TABLE analytics.oee (
    bucket       timestamptz NOT NULL,  -- start of the shift or hour
    bucket_end   timestamptz NOT NULL,
    period       text NOT NULL CHECK (period IN ('shift', 'hour')),
    site         text NOT NULL,
    line         text NOT NULL,
    shift        text NOT NULL,         -- the shift's name in the calendar
    shift_start  timestamptz NOT NULL,
    availability double precision NOT NULL,  -- run time / planned time
    performance  double precision,           -- ideal cycle time x count / run time; NULL without run time
    quality      double precision,           -- good / total; NULL without output
    oee          double precision NOT NULL,
    planned_s    double precision NOT NULL,  -- bucket minus planned breaks (only up to now for the current shift)
    run_s        double precision NOT NULL,
    total_count  double precision NOT NULL,
    good_count   double precision NOT NULL,
    ideal_rate   double precision NOT NULL,  -- units per hour
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, line, period, bucket)
);
CREATE INDEX oee_bucket_idx ON analytics.oee (bucket);

-- Unplanned stops inside planned time, by reason: the machine state's name, 'microstop'
-- for stops shorter than the configured limit, 'no_data' before the first state sample.
CREATE TABLE analytics.oee_loss (
    bucket      timestamptz NOT NULL,
    period      text NOT NULL CHECK (period IN ('shift', 'hour')),
    site        text NOT NULL,
    line        text NOT NULL,
    reason      text NOT NULL,
    stops       integer NOT NULL,
    seconds     double precision NOT NULL,
    PRIMARY KEY (site, line, period, bucket, reason)
);
CREATE INDEX oee_loss_bucket_idx ON analytics.oee_loss (bucket);
