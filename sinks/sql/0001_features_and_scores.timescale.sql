-- With TimescaleDB: both tables become hypertables partitioned by window start (1-day chunks),
-- compressed per patient once older than sink_policies.compress_after_days (the policy itself
-- is set by sinks/migrations.py from the settings).
SELECT create_hypertable('features', by_range('window_start', INTERVAL '1 day'), if_not_exists => TRUE,
                         create_default_indexes => FALSE, migrate_data => TRUE);
SELECT create_hypertable('risk_scores', by_range('window_start', INTERVAL '1 day'), if_not_exists => TRUE,
                         create_default_indexes => FALSE, migrate_data => TRUE);
ALTER TABLE features SET (timescaledb.compress, timescaledb.compress_segmentby = 'patient_id, metric',
                          timescaledb.compress_orderby = 'window_start DESC');
ALTER TABLE risk_scores SET (timescaledb.compress, timescaledb.compress_segmentby = 'patient_id, model_name',
                             timescaledb.compress_orderby = 'window_start DESC');
