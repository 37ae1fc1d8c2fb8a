#!/bin/bash
# TLS only from other containers and the host, for the timescaledb container of docker-compose.yml.
#
# The image's entrypoint runs this once, when it initialises an empty data directory, after
# 010_vitalrisk_roles.sh. By then it has appended `host all all all scram-sha-256` to pg_hba.conf,
# which would let a client in without TLS; this makes that line `hostssl`, so every connection
# from outside the container is TLS (the server's certificate, docker-compose.yml's `command`) with a
# SCRAM password. The loopback lines initdb wrote stay: only this container's own processes (the
# entrypoint, the healthcheck's pg_isready) reach them.
set -Eeo pipefail

hba="${PGDATA:?PGDATA must name the data directory}/pg_hba.conf"
sed -i -E 's/^host([[:space:]]+all[[:space:]]+all[[:space:]]+all[[:space:]]+)/hostssl\1/' "$hba"
if grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+(all|0\.0\.0\.0/0|::/0)[[:space:]]' "$hba"; then
    echo "020_vitalrisk_tls_only: $hba still lets clients in without TLS" >&2
    exit 1
fi
if ! grep -Eq '^hostssl[[:space:]]+all[[:space:]]+all[[:space:]]+all[[:space:]]+scram-sha-256' "$hba"; then
    echo "020_vitalrisk_tls_only: $hba has no hostssl scram-sha-256 line for other containers" >&2
    exit 1
fi
