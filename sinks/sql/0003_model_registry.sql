-- Model snapshots: one immutable row per model name and version. The serialized model travels
-- with its SHA-256 (hex), which the database checks, so a truncated or altered blob cannot be
-- registered; a scorer verifies it again before loading.
CREATE TABLE IF NOT EXISTS model_registry (
    model_name    text        NOT NULL CHECK (model_name <> ''),
    model_version text        NOT NULL CHECK (model_version <> ''),
    created_at    timestamptz NOT NULL,
    examples_seen bigint      NOT NULL CHECK (examples_seen >= 0),
    metrics       jsonb       NOT NULL DEFAULT '{}',
    model         bytea       NOT NULL,
    model_sha256  text        NOT NULL CHECK (model_sha256 = encode(sha256(model), 'hex')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, model_version)
);

-- "The newest snapshot of model X" without reading any blob.
CREATE INDEX IF NOT EXISTS model_registry_latest_idx ON model_registry (model_name, created_at DESC);
