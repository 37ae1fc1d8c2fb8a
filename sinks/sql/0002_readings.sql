-- Raw readings, optional and thinned: the writer keeps at most one reading per patient, metric
-- and VITALS_SINK_READINGS_EVERY_MS of each batch (none unless that setting is set). The key is
-- the reading's own time, so a replay adds nothing.
CREATE TABLE IF NOT EXISTS readings (
    patient_id text             NOT NULL,
    metric     text             NOT NULL,
    ts         timestamptz      NOT NULL,
    value      double precision NOT NULL,
    device_id  text             NOT NULL,
    PRIMARY KEY (patient_id, metric, ts)
);

CREATE INDEX IF NOT EXISTS readings_ts_idx ON readings USING brin (ts);
