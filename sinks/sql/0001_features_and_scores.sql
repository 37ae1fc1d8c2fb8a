-- Roles: the pipeline writes as vitalrisk_writer, Grafana reads as vitalrisk_reader.
-- Both are created without passwords; deployments set them (docker-compose's init script creates
-- them, with passwords, before this runs). What each may do is granted by sinks/migrations.py
-- after every migrate. A migrator allowed to alter roles also makes the reader's sessions
-- read-only by default, as docker-compose's init script does.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitalrisk_writer') THEN
        CREATE ROLE vitalrisk_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitalrisk_reader') THEN
        CREATE ROLE vitalrisk_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER ROLE vitalrisk_reader SET default_transaction_read_only = on;
    END IF;
END
$$;

-- Per patient, metric and event-time window: the natural key makes replays idempotent.
CREATE TABLE IF NOT EXISTS features (
    patient_id   text             NOT NULL,
    metric       text             NOT NULL,
    window_start timestamptz      NOT NULL,
    window_end   timestamptz      NOT NULL,
    n            integer          NOT NULL CHECK (n > 0),
    mean         double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    PRIMARY KEY (patient_id, metric, window_start)
);

-- One row per patient, window and model; names the model version and the inputs behind it.
CREATE TABLE IF NOT EXISTS risk_scores (
    patient_id    text             NOT NULL,
    window_start  timestamptz      NOT NULL,
    window_end    timestamptz      NOT NULL,
    model_name    text             NOT NULL,
    model_version text             NOT NULL,
    score         double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    news2_total   smallint         NOT NULL CHECK (news2_total BETWEEN 0 AND 20),
    news2_band    text             NOT NULL CHECK (news2_band IN ('low', 'low-medium', 'medium', 'high')),
    inputs        jsonb            NOT NULL,
    contributions jsonb            NOT NULL,
    missing_inputs text[]          NOT NULL DEFAULT '{}',
    scored_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, model_name, window_start)
);

-- Windows arrive roughly in event-time order, so a BRIN index serves time ranges at a tiny
-- fraction of a B-tree's size; per-patient reads use the primary keys. Scores are read newest
-- first across patients ("who is worst now"), which a descending B-tree serves best.
CREATE INDEX IF NOT EXISTS features_window_start_idx ON features USING brin (window_start);
CREATE INDEX IF NOT EXISTS risk_scores_window_start_idx ON risk_scores (window_start DESC);
