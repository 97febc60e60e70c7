-- The plant manager's reports, owned by analytics: one row per report the mailer has sent
-- or tried to send (docs/reports.md). A row with sent_at set is never sent again, so a
-- restarted scheduler does not mail a shift twice; a failed try keeps its error and is
-- tried again on the next run.
CREATE TABLE analytics.report_sent (
    site          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('shift', 'day')),
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    label         text NOT NULL,          -- e.g. 'shift A 2031-02-03'
    recipients    text[] NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    sent_at       timestamptz,            -- NULL: not delivered yet
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, kind, period_start),
    CHECK (period_end > period_start)
);
