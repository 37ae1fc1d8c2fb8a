#!/usr/bin/env bash
# Debian packages the local services need: Java 17 and Maven (Kafka), the PostgreSQL server, its
# headers and cmake (to build TimescaleDB), Prometheus tools and docker-compose (to check files).
# As root it installs what is missing; as anyone else it says what is missing and carries on.
set -euo pipefail
say() { echo "system-deps: $*"; }

packages=(openjdk-17-jre-headless maven postgresql cmake patch docker-compose prometheus prometheus-alertmanager)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done

if [ "$(id -u)" != 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then say "not root, so not installing: ${missing[*]} (run: sudo make system-deps)"
    else say "system packages present"; fi
    exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    updated=1
fi

# The server's headers, at the installed server's own version: installing the newest headers
# would upgrade the server too, and the TimescaleDB build must match the server it loads into.
major=$(ls /usr/lib/postgresql | sort -n | tail -1)
dev="postgresql-server-dev-$major"
if dpkg -s "$dev" >/dev/null 2>&1; then
    say "system packages present"
    exit 0
fi
server_version=$(dpkg-query -W -f='${Version}' "postgresql-$major")
[ -n "${updated:-}" ] || apt-get update -qq
say "installing $dev=$server_version (the headers of the installed PostgreSQL $major server)"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$dev=$server_version" >/dev/null 2>&1; then
    say "$dev $server_version is not offered; installing the newest (this upgrades the server too)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$dev" >/dev/null
fi
