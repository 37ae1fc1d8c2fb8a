CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_5m AS
SELECT date_bin(INTERVAL '5 minutes', window_start, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       patient_id, metric, sum(n)::bigint AS n, sum(mean * n) / sum(n) AS mean, min(min) AS min, max(max) AS max
FROM features
GROUP BY 1, patient_id, metric;

CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1h AS
SELECT date_bin(INTERVAL '1 hour', window_start, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       patient_id, metric, sum(n)::bigint AS n, sum(mean * n) / sum(n) AS mean, min(min) AS min, max(max) AS max
FROM features
GROUP BY 1, patient_id, metric;

CREATE MATERIALIZED VIEW IF NOT EXISTS risk_5m AS
SELECT date_bin(INTERVAL '5 minutes', window_start, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       patient_id, model_name, count(*) AS windows, avg(score) AS score_mean, max(score) AS score_max,
       avg(news2_total::double precision) AS news2_mean, max(news2_total) AS news2_max
FROM risk_scores
GROUP BY 1, patient_id, model_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS risk_1h AS
SELECT date_bin(INTERVAL '1 hour', window_start, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       patient_id, model_name, count(*) AS windows, avg(score) AS score_mean, max(score) AS score_max,
       avg(news2_total::double precision) AS news2_mean, max(news2_total) AS news2_max
FROM risk_scores
GROUP BY 1, patient_id, model_name;

-- Unique keys let REFRESH ... CONCURRENTLY run without blocking the boards' reads.
CREATE UNIQUE INDEX IF NOT EXISTS vitals_5m_key ON vitals_5m (patient_id, metric, bucket);
CREATE UNIQUE INDEX IF NOT EXISTS vitals_1h_key ON vitals_1h (patient_id, metric, bucket);
CREATE UNIQUE INDEX IF NOT EXISTS risk_5m_key ON risk_5m (patient_id, model_name, bucket);
CREATE UNIQUE INDEX IF NOT EXISTS risk_1h_key ON risk_1h (patient_id, model_name, bucket);
CREATE INDEX IF NOT EXISTS vitals_5m_bucket_idx ON vitals_5m (bucket);
CREATE INDEX IF NOT EXISTS vitals_1h_bucket_idx ON vitals_1h (bucket);
CREATE INDEX IF NOT EXISTS risk_5m_bucket_idx ON risk_5m (bucket);
CREATE INDEX IF NOT EXISTS risk_1h_bucket_idx ON risk_1h (bucket);

-- Retention, then the rollups. SECURITY DEFINER: it runs as the migrator, who owns the views
-- (only an owner may refresh them) and may delete; the writer may call it but can itself
-- neither delete nor refresh. A second caller while one runs returns at once.
CREATE OR REPLACE FUNCTION vitalrisk_maintenance() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    p sink_policies%ROWTYPE;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1986622562) THEN  -- 0x76697462, "vitb": one refresh at a time
        RETURN;
    END IF;
    SELECT * INTO p FROM sink_policies;
    IF p.raw_retention_days > 0 THEN
        DELETE FROM features WHERE window_start < now() - make_interval(days => p.raw_retention_days);
        DELETE FROM readings WHERE ts < now() - make_interval(days => p.raw_retention_days);
    END IF;
    IF p.scores_retention_days > 0 THEN
        DELETE FROM risk_scores WHERE window_start < now() - make_interval(days => p.scores_retention_days);
    END IF;
    REFRESH MATERIALIZED VIEW CONCURRENTLY vitals_5m;
    REFRESH MATERIALIZED VIEW CONCURRENTLY vitals_1h;
    REFRESH MATERIALIZED VIEW CONCURRENTLY risk_5m;
    REFRESH MATERIALIZED VIEW CONCURRENTLY risk_1h;
END
$$;
