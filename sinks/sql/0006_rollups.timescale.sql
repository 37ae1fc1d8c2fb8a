-- vitalrisk: no-transaction
-- Continuous aggregates WITH DATA (materialising what the tables already hold) cannot be created
-- inside a transaction block, so this file runs statement by statement; each is idempotent.
-- materialized_only = false: queries add the rows not yet materialised (real-time aggregation).
-- start_offset => NULL: refreshes cover the whole history, so replayed or back-filled windows
-- reach the rollups too (a refresh only recomputes buckets that changed).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', window_start) AS bucket,
       patient_id, metric, sum(n)::bigint AS n, sum(mean * n) / sum(n) AS mean, min(min) AS min, max(max) AS max
FROM features
GROUP BY time_bucket(INTERVAL '5 minutes', window_start), patient_id, metric
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', window_start) AS bucket,
       patient_id, metric, sum(n)::bigint AS n, sum(mean * n) / sum(n) AS mean, min(min) AS min, max(max) AS max
FROM features
GROUP BY time_bucket(INTERVAL '1 hour', window_start), patient_id, metric
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS risk_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', window_start) AS bucket,
       patient_id, model_name, count(*) AS windows, avg(score) AS score_mean, max(score) AS score_max,
       avg(news2_total::double precision) AS news2_mean, max(news2_total) AS news2_max
FROM risk_scores
GROUP BY time_bucket(INTERVAL '5 minutes', window_start), patient_id, model_name
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS risk_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', window_start) AS bucket,
       patient_id, model_name, count(*) AS windows, avg(score) AS score_mean, max(score) AS score_max,
       avg(news2_total::double precision) AS news2_mean, max(news2_total) AS news2_max
FROM risk_scores
GROUP BY time_bucket(INTERVAL '1 hour', window_start), patient_id, model_name
WITH DATA;

SELECT add_continuous_aggregate_policy('vitals_5m', start_offset => NULL, end_offset => INTERVAL '5 minutes',
                                       schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('vitals_1h', start_offset => NULL, end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('risk_5m', start_offset => NULL, end_offset => INTERVAL '5 minutes',
                                       schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('risk_1h', start_offset => NULL, end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);

-- Policies refresh the aggregates and apply retention: the pipeline's periodic call does nothing.
CREATE OR REPLACE FUNCTION vitalrisk_maintenance() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$ SELECT $$;
