#!/bin/bash
# Least-privilege roles for the vitalrisk database, for the timescaledb container of docker-compose.yml.
#
# The image's entrypoint runs this once, as the superuser, when it initialises an empty data
# directory, after its own scripts (000_install_timescaledb.sh has already created the extension
# in $POSTGRES_DB). It creates four LOGIN roles, none a superuser:
#
#   vitalrisk_owner   owns the database (and so its public schema); `vitalrisk migrate` runs as it,
#                     creates the tables and grants the two roles below what they need
#   vitalrisk_writer  the pipeline's role: only what the migrations grant it
#   vitalrisk_reader  Grafana's role: read-only sessions, only what the migrations grant it
#   vitalrisk_gateway the ingest gateway's role: reads device credentials, writes their last_seen
#                     (VITALS_GATEWAY_PASSWORD; unset leaves it without a password, so it cannot log in)
#
# Passwords come from the container's environment (set in .env, see docker-compose.yml) and reach
# psql as variables, quoted by psql itself, never spliced into SQL text by the shell. Roles are
# made only on first initialisation: to change a password later, use ALTER ROLE.
set -Eeo pipefail

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:?POSTGRES_DB must name the vitalrisk database}" \
    --set=db="${POSTGRES_DB}" \
    --set=owner_password="${VITALS_OWNER_PASSWORD:?set VITALS_OWNER_PASSWORD}" \
    --set=writer_password="${VITALS_WRITER_PASSWORD:?set VITALS_WRITER_PASSWORD}" \
    --set=reader_password="${VITALS_READER_PASSWORD:?set VITALS_READER_PASSWORD}" \
    --set=gateway_password="${VITALS_GATEWAY_PASSWORD:-}" \
    <<'SQL'
CREATE ROLE vitalrisk_owner  LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE vitalrisk_writer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'writer_password';
CREATE ROLE vitalrisk_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'reader_password';
CREATE ROLE vitalrisk_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'gateway_password';
ALTER ROLE vitalrisk_reader SET default_transaction_read_only = on;

ALTER DATABASE :"db" OWNER TO vitalrisk_owner;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO vitalrisk_writer, vitalrisk_reader, vitalrisk_gateway;

CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
