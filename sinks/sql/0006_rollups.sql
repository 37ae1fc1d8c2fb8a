-- Per-patient rollups for the boards, under the same names and columns everywhere:
--   vitals_5m, vitals_1h  (bucket, patient_id, metric, n, mean, min, max)
--   risk_5m,   risk_1h    (bucket, patient_id, model_name, windows, score_mean, score_max,
--                          news2_mean, news2_max)
-- TimescaleDB: real-time continuous aggregates refreshed by policies (0006_rollups.timescale.sql).
-- Plain PostgreSQL: materialized views refreshed by vitalrisk_maintenance(), which the writer
-- calls periodically (0006_rollups.plain.sql). Buckets start at the same instants on both
-- (time_bucket's origin, Monday 2000-01-03 00:00 UTC), so board queries may bucket further
-- with date_bin and never need time_bucket.
SELECT 1;
