-- Device credentials of the ingest gateway: which device may upload for which patient, and the
-- SHA-256 of its token (never the token). Ids are the pseudonymous ones (kernel.limits.ID_PATTERN).
--
-- The table lives in a schema of its own, `gateway`, apart from the pipeline's tables in
-- `public`: the migrator's grants (sinks/migrations.py) give the writer and Grafana's reader
-- SELECT on everything in `public`, and neither has any business reading token digests. Only the
-- schema owner (`vitalrisk devices` runs as it) and the gateway's own role below reach it.
-- The role is created here without a password, like the pipeline's roles in 0001; a migrator
-- that may not create roles (docker-compose's owner) needs it created first by its init script.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitalrisk_gateway') THEN
        IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            RAISE EXCEPTION 'role vitalrisk_gateway does not exist and % may not create it', current_user
                USING HINT = 'create it as a superuser (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; '
                             'sinks/docker-init/010_vitalrisk_roles.sh does on a new volume), then migrate again';
        END IF;
        CREATE ROLE vitalrisk_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO vitalrisk_gateway', current_database());
END
$$;

CREATE SCHEMA IF NOT EXISTS gateway;
REVOKE ALL ON SCHEMA gateway FROM PUBLIC;

-- One row per credential ever issued. A device has at most one credential that is not revoked;
-- revoked rows stay, so `devices list --all` shows who held what and when.
CREATE TABLE IF NOT EXISTS gateway.devices (
    token_id     text        PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{12}$'),
    device_id    text        NOT NULL CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    patient_id   text        NOT NULL CHECK (patient_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    token_sha256 bytea       NOT NULL CHECK (length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_seen    timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE UNIQUE INDEX IF NOT EXISTS devices_one_active_idx ON gateway.devices (device_id) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS devices_patient_idx ON gateway.devices (patient_id);

-- The gateway looks tokens up and records when a device was last seen; nothing else.
GRANT USAGE ON SCHEMA gateway TO vitalrisk_gateway;
GRANT SELECT ON gateway.devices TO vitalrisk_gateway;
GRANT UPDATE (last_seen) ON gateway.devices TO vitalrisk_gateway;
