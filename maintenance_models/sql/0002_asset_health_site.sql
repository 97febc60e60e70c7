-- Asset health per site: two sites may both have a "centrifugal1", and their telemetry is two
-- histories, two scores and two maintenance orders, not one mixed average. Rows scored before
-- this have the site '' (they cannot tell which site they came from).
ALTER TABLE maintenance.asset_health ADD COLUMN site text NOT NULL DEFAULT '';
ALTER TABLE maintenance.asset_health ALTER COLUMN site DROP DEFAULT;
ALTER TABLE maintenance.asset_health DROP CONSTRAINT asset_health_pkey;
ALTER TABLE maintenance.asset_health ADD PRIMARY KEY (site, asset, time, model_version);
