#!/bin/bash
# Least-privilege roles for the vitalrisk database, for the timescaledb container of docker-compose.yml.
#
# The image's entrypoint runs this once, as the superuser, when it initialises an empty data
# directory, after its own scripts (000_install_timescaledb.sh has already created the extension
# in $POSTGRES_DB). It creates one LOGIN role per service, none a superuser (sinks/migrations.py,
# SERVICE_GRANTS, says what each may do; the migrations need them made first, as the owner may not):
#
#   vitalrisk_owner   owns the database (and so its public schema); `vitalrisk migrate` runs as it,
#                     creates the tables and grants the roles below what they need
#   vitalrisk_worker  the worker: inserts windows, scores and readings (VITALS_WORKER_PASSWORD)
#   vitalrisk_trainer the trainer: model registry, outcomes, ops events (VITALS_TRAINER_PASSWORD)
#   vitalrisk_alerter the alerter (and `vitalrisk ack`/`silence`): alert state, the outbox, silences
#                     (VITALS_ALERTER_PASSWORD)
#   vitalrisk_reader  Grafana's role: read-only sessions, only what the migrations grant it
#   vitalrisk_gateway the ingest gateway's role: reads device credentials, writes their last_seen
#                     (VITALS_GATEWAY_PASSWORD)
#   vitalrisk_writer  deprecated: what worker, trainer and alerter shared before; it exists because the
#                     first migration names it, and has a password only if VITALS_WRITER_PASSWORD is set
#
# A role whose password variable is unset gets none, so it cannot log in (scram-sha-256 refuses it).
#
# Passwords come from the container's environment (set in .env, see docker-compose.yml) and reach
# psql as variables, quoted by psql itself, never spliced into SQL text by the shell. Roles are
# made only on first initialisation: to change a password later, use ALTER ROLE.
set -Eeo pipefail

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:?POSTGRES_DB must name the vitalrisk database}" \
    --set=db="${POSTGRES_DB}" \
    --set=owner_password="${VITALS_OWNER_PASSWORD:?set VITALS_OWNER_PASSWORD}" \
    --set=worker_password="${VITALS_WORKER_PASSWORD:?set VITALS_WORKER_PASSWORD}" \
    --set=trainer_password="${VITALS_TRAINER_PASSWORD:?set VITALS_TRAINER_PASSWORD}" \
    --set=alerter_password="${VITALS_ALERTER_PASSWORD:?set VITALS_ALERTER_PASSWORD}" \
    --set=reader_password="${VITALS_READER_PASSWORD:?set VITALS_READER_PASSWORD}" \
    --set=gateway_password="${VITALS_GATEWAY_PASSWORD:-}" \
    --set=writer_password="${VITALS_WRITER_PASSWORD:-}" \
    <<'SQL'
CREATE ROLE vitalrisk_owner  LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE vitalrisk_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'worker_password';
CREATE ROLE vitalrisk_trainer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'trainer_password';
CREATE ROLE vitalrisk_alerter LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'alerter_password';
CREATE ROLE vitalrisk_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'writer_password';
CREATE ROLE vitalrisk_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'reader_password';
CREATE ROLE vitalrisk_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'gateway_password';
ALTER ROLE vitalrisk_reader SET default_transaction_read_only = on;

ALTER DATABASE :"db" OWNER TO vitalrisk_owner;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO vitalrisk_worker, vitalrisk_trainer, vitalrisk_alerter, vitalrisk_reader,
    vitalrisk_gateway, vitalrisk_writer;

CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
