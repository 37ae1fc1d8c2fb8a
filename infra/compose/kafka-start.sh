#!/bin/bash
# The Compose broker's entrypoint (docker-compose.yml, service kafka; tests/infra/test_compose_broker.py
# runs it on the real broker too). It starts from what `vitalrisk infra compose-kafka` wrote in the
# kafka-config volume (infra/compose.py): on an empty storage it formats it once, with the SCRAM user
# of each principal (`--add-scram`, one argument per line of scram-args), then runs the broker.
set -Eeuo pipefail

config_dir="${VITALRISK_KAFKA_CONFIG_DIR:-/kafka-config}"
bin="${KAFKA_BIN:-/opt/kafka/bin}"
properties="$config_dir/server.properties"
data="$(sed -n 's/^log\.dirs=//p' "$properties")"
if [ -z "$data" ]; then
    echo "kafka-start: $properties names no log.dirs; run \`vitalrisk infra compose-kafka\` first" >&2
    exit 1
fi
if [ ! -f "$data/meta.properties" ]; then
    mapfile -t scram < "$config_dir/scram-args"
    "$bin/kafka-storage.sh" format --cluster-id="$(cat "$config_dir/cluster-id")" --config "$properties" \
        --ignore-formatted "${scram[@]}"
fi
exec "$bin/kafka-server-start.sh" "$properties"
