-- The ideal production rate that OEE's performance is measured against: per product, and
-- per production work order where one run differs (another line, another grade). Units of
-- the product's uom per hour at nominal speed; NULL: not known (OEE falls back to its config).
ALTER TABLE erp.product ADD COLUMN ideal_rate numeric(14, 3) CHECK (ideal_rate > 0);
ALTER TABLE erp.work_order ADD COLUMN ideal_rate numeric(14, 3) CHECK (ideal_rate > 0);
