-- With TimescaleDB: both tables become hypertables partitioned by window start.
SELECT create_hypertable('features', by_range('window_start', INTERVAL '1 day'), if_not_exists => TRUE,
                         migrate_data => TRUE);
SELECT create_hypertable('risk_scores', by_range('window_start', INTERVAL '1 day'), if_not_exists => TRUE,
                         migrate_data => TRUE);
