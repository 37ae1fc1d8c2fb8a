SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE,
                         create_default_indexes => FALSE, migrate_data => TRUE);
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'patient_id, metric',
                          timescaledb.compress_orderby = 'ts DESC');
