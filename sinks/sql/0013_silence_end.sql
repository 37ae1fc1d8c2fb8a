-- Silences can be ended early (`vitalrisk unsilence`, DELETE /silences/{id}), with who and when.
-- The row stays, as the audit of who silenced what: ending one moves its ends_at to the moment
-- it was ended and records by whom. No service may UPDATE silences (a column grant could not stop
-- it from moving ends_at a year ahead): the alerter calls end_silence(), which runs as the owner
-- and can only end a silence that has not ended, now. sinks/migrations.py grants EXECUTE.
ALTER TABLE silences ADD COLUMN IF NOT EXISTS ended_by text CHECK (length(ended_by) BETWEEN 1 AND 100);
ALTER TABLE silences ADD COLUMN IF NOT EXISTS ended_at timestamptz;

CREATE OR REPLACE FUNCTION end_silence(p_silence_id text, p_by text)
RETURNS TABLE (silence_id text, patient_id text, kind text, starts_at timestamptz, ends_at timestamptz,
               created_by text, reason text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    -- ends_at stays after starts_at (the table's CHECK), even for a silence ended as it began
    UPDATE silences AS s
       SET ends_at = greatest(now(), s.starts_at + interval '1 millisecond'), ended_by = p_by, ended_at = now()
     WHERE s.silence_id = p_silence_id AND s.ends_at > now()
    RETURNING s.silence_id, s.patient_id, s.kind, s.starts_at, s.ends_at, s.created_by, s.reason
$$;
REVOKE EXECUTE ON FUNCTION end_silence(text, text) FROM PUBLIC;
