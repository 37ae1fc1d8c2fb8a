-- Operational events: drift, fairness gaps, data stopped, ... Low volume, kept for audit.
-- kind is a low-cardinality code; subject a model name or a pseudonymous patient/device id,
-- never a person's name. The natural key (kind, subject, ts) makes re-raising an event a no-op.
CREATE TABLE IF NOT EXISTS ops_events (
    ts          timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    subject     text        NOT NULL CHECK (subject <> ''),
    details     jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, subject, ts)
);

CREATE INDEX IF NOT EXISTS ops_events_ts_idx ON ops_events (ts DESC);
