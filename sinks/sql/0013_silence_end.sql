-- Silences can be ended early (`vitalrisk unsilence`, DELETE /silences/{id}), with who and when.
-- The row stays, as the audit of who silenced what: ending one moves its ends_at to the moment
-- it was ended and records by whom. The writer may update only these three columns.
ALTER TABLE silences ADD COLUMN IF NOT EXISTS ended_by text CHECK (length(ended_by) BETWEEN 1 AND 100);
ALTER TABLE silences ADD COLUMN IF NOT EXISTS ended_at timestamptz;
GRANT UPDATE (ends_at, ended_by, ended_at) ON silences TO vitalrisk_writer;
