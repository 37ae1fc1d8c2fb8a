-- Alerting (issue 7): episodes, their history, the page outbox, webhook audit and dead letters,
-- acknowledgements and silences. Patient ids are the pseudonymous ones; no names, no vital values.
-- Times are timestamptz; "event time" columns come from score windows, the others from the wall clock.

-- The alert engine's per-patient state (JSON snapshot), so it moves with the Kafka partition:
-- a worker that takes over a partition loads its patients' rows.
CREATE TABLE IF NOT EXISTS alert_state (
    patient_id      text        PRIMARY KEY,
    kafka_partition integer     NOT NULL CHECK (kafka_partition >= 0),
    state           jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_state_partition_idx ON alert_state (kafka_partition);

-- One row per episode that fired. alert_id is deterministic (patient, kind, breach start), so a
-- replayed score stream finds the same row; (patient_id, kind, started_at) is the natural key.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id         text        PRIMARY KEY,
    patient_id       text        NOT NULL,
    kind             text        NOT NULL,
    episode          integer     NOT NULL CHECK (episode > 0),
    severity         text        NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    state            text        NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    started_at       timestamptz NOT NULL,            -- breach began (event time; data_stopped: last score)
    fired_at         timestamptz,                     -- event time it fired (data_stopped: wall clock)
    resolved_at      timestamptz,                     -- event time it resolved
    updated_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    escalated_at     timestamptz,
    notified_at      timestamptz,                     -- first page (wall clock); NULL: silenced or inhibited
    last_notified_at timestamptz,
    peak             double precision,
    model_name       text,
    model_version    text,
    UNIQUE (patient_id, kind, started_at)
);
CREATE INDEX IF NOT EXISTS alerts_firing_idx ON alerts (state, severity) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_patient_idx ON alerts (patient_id, started_at DESC);

-- Each episode's history: pending, cancelled, firing, silenced, inhibited, acknowledged,
-- escalated, renotified:<n>, resolved. One row per (episode, event): replays add nothing.
CREATE TABLE IF NOT EXISTS alert_events (
    alert_id    text        NOT NULL,
    event       text        NOT NULL,
    patient_id  text        NOT NULL,
    kind        text        NOT NULL,
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    event_time  timestamptz,                          -- score window end behind it, if any
    at          timestamptz NOT NULL,                 -- wall clock of the engine step
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, event)
);
CREATE INDEX IF NOT EXISTS alert_events_at_idx ON alert_events (at DESC);

-- The outbox: every page the engine issued, written in the same transaction as the state that
-- caused it; delivered from here (and re-delivered after a crash). notification_id is the
-- Idempotency-Key the receivers see.
CREATE TABLE IF NOT EXISTS alert_notifications (
    notification_id text        PRIMARY KEY,
    alert_id        text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('firing', 'renotify', 'escalate', 'resolved')),
    patient_id      text        NOT NULL,
    kind            text        NOT NULL,
    severity        text        NOT NULL,
    receivers       text[]      NOT NULL,
    page            jsonb       NOT NULL,
    source_ts       timestamptz,                      -- Kafka timestamp of the score behind it (latency)
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_notifications_created_idx ON alert_notifications (created_at DESC);

-- Audit: every HTTP attempt of every page to every receiver.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id text             NOT NULL,
    receiver        text             NOT NULL,
    attempt         integer          NOT NULL CHECK (attempt > 0),
    outcome         text             NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    status_code     integer,
    error           text,
    duration_ms     double precision NOT NULL,
    attempted_at    timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_notification_idx ON webhook_deliveries (notification_id, receiver);
CREATE INDEX IF NOT EXISTS webhook_deliveries_attempted_idx ON webhook_deliveries (attempted_at DESC);

-- Pages given up on (permanent failure or retry budget spent), whole, for a human to resend.
CREATE TABLE IF NOT EXISTS webhook_deadletters (
    notification_id text        NOT NULL,
    receiver        text        NOT NULL,
    attempts        integer     NOT NULL,
    last_status     integer,
    last_error      text        NOT NULL,
    body            jsonb       NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, receiver)
);

-- Who acknowledged which alert, when, and through what (HTTP API or CLI).
CREATE TABLE IF NOT EXISTS acknowledgements (
    ack_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        text        NOT NULL,
    acknowledged_by text        NOT NULL CHECK (length(acknowledged_by) BETWEEN 1 AND 100),
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    via             text        NOT NULL CHECK (via IN ('http', 'cli'))
);
CREATE INDEX IF NOT EXISTS acknowledgements_alert_idx ON acknowledgements (alert_id);

-- Time-bound silences: who, when, until, why. NULL patient or kind matches every one.
CREATE TABLE IF NOT EXISTS silences (
    silence_id text        PRIMARY KEY,
    patient_id text,
    kind       text,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_by text        NOT NULL CHECK (length(created_by) BETWEEN 1 AND 100),
    reason     text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS silences_ends_idx ON silences (ends_at);

-- The migrator grants SELECT, INSERT on every table; alert state also needs these updates, and
-- only these columns (history, audit, acknowledgements and silences stay append-only).
GRANT UPDATE (kafka_partition, state, updated_at) ON alert_state TO vitalrisk_writer;
GRANT UPDATE (state, fired_at, resolved_at, updated_at, acknowledged_by, acknowledged_at, escalated_at,
              notified_at, last_notified_at, peak, model_name, model_version) ON alerts TO vitalrisk_writer;
