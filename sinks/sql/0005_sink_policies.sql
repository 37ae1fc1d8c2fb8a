-- Retention and compression, in days (0: keep for ever / never compress). One row, written by
-- `vitalrisk migrate` from the VITALS_SINK_*_DAYS settings; read by the TimescaleDB policies
-- (set by sinks/migrations.py) and, on plain PostgreSQL, by vitalrisk_maintenance().
CREATE TABLE IF NOT EXISTS sink_policies (
    singleton             boolean     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    raw_retention_days    integer     NOT NULL DEFAULT 0 CHECK (raw_retention_days >= 0),
    scores_retention_days integer     NOT NULL DEFAULT 0 CHECK (scores_retention_days >= 0),
    rollup_retention_days integer     NOT NULL DEFAULT 0 CHECK (rollup_retention_days >= 0),
    compress_after_days   integer     NOT NULL DEFAULT 7 CHECK (compress_after_days >= 0),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

INSERT INTO sink_policies DEFAULT VALUES ON CONFLICT DO NOTHING;
