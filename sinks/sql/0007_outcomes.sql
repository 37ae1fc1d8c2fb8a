-- Clinical outcomes as the outcome feed reports them (the trainer writes them): the labels the
-- models learn from, and the annotations on Grafana's patient board. Pseudonymous ids only.
-- The natural key makes a replayed outcome a no-op.
CREATE TABLE IF NOT EXISTS outcomes (
    patient_id   text        NOT NULL CHECK (patient_id <> ''),
    kind         text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    onset        timestamptz NOT NULL,
    published_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, kind, onset)
);

CREATE INDEX IF NOT EXISTS outcomes_onset_idx ON outcomes (onset DESC);
