-- The clerk: day-to-day entry of sales orders, goods receipts and transfers (docs/erp-api.md,
-- "Authentication and roles").
ALTER TABLE erp.app_user DROP CONSTRAINT app_user_role_check;
ALTER TABLE erp.app_user ADD CONSTRAINT app_user_role_check
    CHECK (role IN ('admin', 'planner', 'accountant', 'clerk', 'operator', 'service'));
ALTER TABLE erp.api_key DROP CONSTRAINT api_key_role_check;
ALTER TABLE erp.api_key ADD CONSTRAINT api_key_role_check
    CHECK (role IN ('admin', 'planner', 'accountant', 'clerk', 'operator', 'service'));
