-- Production forecasts, owned by analytics: the production-forecast job's forecast of each
-- line at each site, one row per forecast hour (docs/analytics.md, "Production forecast").
-- A forecast is named by its origin, made_at: the start of the hour it was made in (its
-- history ends there, so a run later in the same hour gives the same forecast and replaces
-- it). Forecasts older than the job's keep_days are deleted by the job.
CREATE TABLE analytics.production_forecast (
    site          text NOT NULL,
    line          text NOT NULL,
    made_at       timestamptz NOT NULL,       -- the origin: the first forecast hour starts here
    hour          timestamptz NOT NULL,       -- the start of the forecast hour
    hours_ahead   integer NOT NULL,           -- 1 for the hour starting at made_at
    expected      double precision NOT NULL,  -- output in the hour, in the counter's units
    lower         double precision NOT NULL,  -- the interval of level `level` (e.g. 0.8: 10 % and 90 %)
    upper         double precision NOT NULL,
    cum_expected  double precision NOT NULL,  -- output from made_at to the hour's end
    cum_lower     double precision NOT NULL,
    cum_upper     double precision NOT NULL,
    baseline      double precision NOT NULL,  -- the seasonal profile alone
    level         double precision NOT NULL,
    basis         text NOT NULL,              -- the model, e.g. 'seasonal profile + LAD correction, split-conformal'
    history_hours integer NOT NULL,           -- hours of counter history the forecast was made from
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, line, made_at, hour),
    CHECK (hours_ahead >= 1),
    CHECK (lower <= expected AND expected <= upper)
);
CREATE INDEX production_forecast_made_at_idx ON analytics.production_forecast (made_at);

-- On a database whose roles exist already (provisioning's 0002 ran before this table was
-- added), the job's role gets to write it; on a new one 0002 grants it, as for every table.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'factory_analytics') THEN
        GRANT INSERT, UPDATE, DELETE ON analytics.production_forecast TO factory_analytics;
    END IF;
END
$$;
