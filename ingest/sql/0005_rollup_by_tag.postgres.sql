-- Pending rollups name the tags as well as the minute, so a refresh reads exactly the rows
-- that changed through the (tag_id, time) key, and samples need no index on time alone:
-- the BRIN index on time cost every COPY about a tenth of its speed, and only the refresh
-- used it. A flush adds one row per minute it touched, with the ids of the tags it wrote
-- in that minute (one row per tag cost a flush of 1,000 tags about 10 ms). Minutes pending
-- from before this version are expanded to their tags first, while that index still
-- serves the lookup.
ALTER TABLE telemetry.rollup_pending ADD COLUMN tag_ids integer[];
INSERT INTO telemetry.rollup_pending (bucket, tag_ids)
SELECT p.bucket, array_agg(DISTINCT s.tag_id)
FROM (SELECT DISTINCT bucket FROM telemetry.rollup_pending WHERE tag_ids IS NULL) p
JOIN telemetry.sample s ON s.time >= p.bucket AND s.time < p.bucket + interval '1 minute'
GROUP BY p.bucket;
DELETE FROM telemetry.rollup_pending WHERE tag_ids IS NULL;
ALTER TABLE telemetry.rollup_pending ALTER COLUMN tag_ids SET NOT NULL;
DROP INDEX telemetry.sample_time_brin;
