-- Production counts, owned by analytics. Each OEE row names the production work order
-- that ran on the line last in its bucket (NULL: none); and the production-counts job
-- keeps one row per line, site and fixed interval it has processed: the counter increase,
-- good and scrap, the ERP work order it went to and the ERP's reply (docs/analytics.md,
-- "Production counts").
ALTER TABLE analytics.oee ADD COLUMN work_order_id bigint;

CREATE TABLE analytics.production_count (
    site            text NOT NULL,
    line            text NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_end    timestamptz NOT NULL,
    work_order_id   bigint,                   -- the production order running on the line; NULL: none
    count           numeric(16, 3) NOT NULL,  -- the counter's increase (resets and wrap-around taken out)
    good            numeric(16, 3) NOT NULL,
    scrap           numeric(16, 3) NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('posted', 'no_order', 'order_closed', 'no_increase',
                                                     'conflict', 'refused')),
    idempotency_key text,                     -- sent with the ERP call (posted, conflict, refused)
    posted_at       timestamptz,              -- when the ERP answered
    reply_status    integer,                  -- its HTTP status
    reply           jsonb,                    -- its body: the work order, or the problem
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, line, interval_start),
    CHECK (interval_end > interval_start)
);
CREATE INDEX production_count_order_idx ON analytics.production_count (work_order_id, interval_start);
