"""Grafana's data sources and dashboard provider, as provisioning documents with fixed uids.

Dashboards refer to data sources by uid, so the uids here are fixed and every board uses
:data:`TIMESCALEDB` or :data:`PROMETHEUS`. Connection details come from the Grafana container's
environment (``docker-compose.yml``), which Grafana expands in provisioning files:
``$VITALS_PG_HOST``, ``$VITALS_PG_DATABASE``, ``$VITALS_READER_PASSWORD`` and
``$VITALS_PROMETHEUS_URL``. Grafana reads the database as ``vitalrisk_reader``, the read-only
role the migrations grant ``SELECT`` to; it never sees the writer's or owner's password.

Examples
--------
>>> [d["uid"] for d in datasources_document()["datasources"]]
['vitalrisk-timescaledb', 'vitalrisk-prometheus']
>>> datasources_document()["datasources"][0]["jsonData"]["timescaledb"]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DataSourceRef:
    """How a panel, query or variable names its data source."""

    type: str
    uid: str

    def json(self) -> dict[str, str]:
        return {"type": self.type, "uid": self.uid}


#: TimescaleDB through Grafana's core PostgreSQL plugin (type id since Grafana 10.3).
TIMESCALEDB = DataSourceRef("grafana-postgresql-datasource", "vitalrisk-timescaledb")
PROMETHEUS = DataSourceRef("prometheus", "vitalrisk-prometheus")

#: The read-only database role (created by sinks/sql/0001, password set by docker-init).
READER_ROLE = "vitalrisk_reader"
#: Where docker-compose.yml mounts ./grafana/dashboards in the Grafana container.
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
#: Where docker-compose.yml mounts the stack's CA (the certs volume) in the Grafana container.
CA_PATH = "/certs/ca.pem"
#: Grafana folder (title and uid) holding the provisioned boards.
FOLDER = "vitalrisk"
#: Prometheus' scrape interval; Grafana derives ``$__rate_interval`` from it.
SCRAPE_INTERVAL = "15s"
#: Smallest bucket a SQL panel uses: one feature window.
SQL_MIN_INTERVAL = "1m"
#: Prometheus version in docker-compose.yml (Grafana adapts its query editor to it).
PROMETHEUS_VERSION = "2.55.1"


def datasources_document() -> dict[str, Any]:
    """``grafana/provisioning/datasources/vitalrisk.yaml``."""
    timescaledb = {
        "name": "TimescaleDB", "uid": TIMESCALEDB.uid, "type": TIMESCALEDB.type, "access": "proxy",
        "url": "$VITALS_PG_HOST", "user": READER_ROLE, "isDefault": False, "editable": False,
        "jsonData": {
            "database": "$VITALS_PG_DATABASE",
            # TLS, the server's certificate verified against the stack's CA, its host name too.
            "sslmode": "verify-full",
            "tlsConfigurationMethod": "file-path",
            "sslRootCertFile": CA_PATH,
            "timescaledb": True,
            "postgresVersion": 1500,  # the newest Grafana 11 offers; compose runs 16, only query-builder hints differ
            "timeInterval": SQL_MIN_INTERVAL,
            "maxOpenConns": 10,
            "maxIdleConns": 10,
            "maxIdleConnsAuto": True,
            "connMaxLifetime": 14400,
        },
        "secureJsonData": {"password": "$VITALS_READER_PASSWORD"},
    }
    prometheus = {
        "name": "Prometheus", "uid": PROMETHEUS.uid, "type": PROMETHEUS.type, "access": "proxy",
        "url": "$VITALS_PROMETHEUS_URL", "isDefault": True, "editable": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": SCRAPE_INTERVAL, "prometheusType": "Prometheus",
                     "prometheusVersion": PROMETHEUS_VERSION},
    }
    return {"apiVersion": 1, "prune": True, "datasources": [timescaledb, prometheus]}


def dashboards_document() -> dict[str, Any]:
    """``grafana/provisioning/dashboards/vitalrisk.yaml``: load every JSON board from the mount."""
    return {"apiVersion": 1, "providers": [{
        "name": "vitalrisk", "orgId": 1, "folder": FOLDER, "folderUid": FOLDER, "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
    }]}
