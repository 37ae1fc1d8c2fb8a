-- One database role per service. Worker, trainer and alerter shared vitalrisk_writer, which could
-- insert silences, acknowledgements and outbox rows: the process that parses untrusted device input
-- could mute paging or have forged pages signed and sent. Now each has its own role:
--
--   vitalrisk_worker   inserts windows, scores and readings; refreshes the rollups
--   vitalrisk_trainer  registers model versions; records outcomes and ops events
--   vitalrisk_alerter  alert state, episodes, the outbox and its audit, acknowledgements, silences
--
-- (The gateway's role is made in 0011, Grafana's reader in 0001.) What each may do is granted by
-- sinks/migrations.py (SERVICE_GRANTS) after every migrate, so this file only makes sure the roles
-- exist and may connect. They are created without passwords, like the others; a migrator that may
-- not create roles (docker-compose's owner) needs them created first by its init script.
-- vitalrisk_writer stays for one release with its old grants (deprecated), then goes.
DO $$
DECLARE
    service_role text;
BEGIN
    FOREACH service_role IN ARRAY ARRAY['vitalrisk_worker', 'vitalrisk_trainer', 'vitalrisk_alerter'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = service_role) THEN
            IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
                RAISE EXCEPTION 'role % does not exist and % may not create it', service_role, current_user
                    USING HINT = 'create it as a superuser (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; '
                                 'sinks/docker-init/010_vitalrisk_roles.sh does on a new volume), then migrate again';
            END IF;
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', service_role);
        END IF;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), service_role);
    END LOOP;
END
$$;
