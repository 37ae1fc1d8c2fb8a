-- Grouped model-risk pages: while a patient has a firing model-risk alert, the other heads'
-- crossings join it instead of paging (stream/alerts/engine.py, "Grouping"). The group is an
-- alerts row of its own (kind 'risk_high': the one that pages, is acknowledged and escalates);
-- each head keeps its own episode row (its hysteresis history), which names the group it paged
-- through here. NULL: not grouped (NEWS2, data_stopped, a head paged on its own). Set when the
-- head's episode fires and never changed, so the alerter needs no UPDATE on it.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS group_id text;
CREATE INDEX IF NOT EXISTS alerts_group_idx ON alerts (group_id) WHERE group_id IS NOT NULL;
