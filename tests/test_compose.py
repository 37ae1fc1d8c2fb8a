"""docker-compose.yml, Dockerfile and .dockerignore keep their promises.

No Docker engine is needed: ``docker-compose config`` validates and resolves the file offline, and
the checks below read what it resolved. They are run twice: on the real file, where they must find
nothing, and on a deliberately bad file, where they must find every fault, so a check that cannot
fail is caught too.

The promises: the stack validates with the password and secret variables set and fails without any
one of them (no default passwords); every image is pinned; every port is published on 127.0.0.1
only; no password is written in the file, each goes only to the services that need it, and no
pipeline process connects as the superuser; every long-running service is health-checked or waits
on its dependencies' health; the pipeline is wired as the code reads it (metrics reachable by
Prometheus, Kafka keeps old-timestamped records, the alerter pages the pager with the secret the
pager verifies); the stack is secured as the local one is (every Kafka client speaks SASL_SSL as its
own principal with the stack's CA, the broker's generated configuration has no plaintext listener
other containers reach and enforces ACLs, every database URL is verify-full, TimescaleDB serves TLS
and accepts only hostssl from outside its container, Grafana's data source verifies it); the image
runs `vitalrisk` as a non-root user and its build context holds neither secrets nor local state.

The broker's configuration is what the file's one-shot services generate: their commands are run
here (``vitalrisk infra compose-certs`` and ``compose-kafka``, with the container paths moved to a
temporary folder) and the checks read the ``server.properties`` they write. That configuration
runs on the real broker in tests/infra/test_compose_broker.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from grafana.datasources import datasources_document
from infra.compose import ca_file, make_certs, parse_hosts, password_variable
from infra.serving import alerter_listener, gateway_listener, server_tls
from infra.kafka_acls import ADMIN, PRINCIPALS
from kernel.settings import Settings
from stream.alerts.routing import Router, parse_receivers
from stream.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INIT_SCRIPT = ROOT / "sinks" / "docker-init" / "010_vitalrisk_roles.sh"
TLS_ONLY_SCRIPT = ROOT / "sinks" / "docker-init" / "020_vitalrisk_tls_only.sh"
KAFKA_START = ROOT / "infra" / "compose" / "kafka-start.sh"
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
COMPOSE_TIMEOUT_S = 60

#: Every secret the stack needs, and the only services that may see it.
SECRET_AUDIENCE: dict[str, set[str]] = {
    "POSTGRES_PASSWORD": {"timescaledb"},
    "VITALS_OWNER_PASSWORD": {"timescaledb", "migrate"},
    "VITALS_WORKER_PASSWORD": {"timescaledb", "worker"},
    "VITALS_TRAINER_PASSWORD": {"timescaledb", "trainer"},
    "VITALS_ALERTER_PASSWORD": {"timescaledb", "alerter"},
    "VITALS_READER_PASSWORD": {"timescaledb", "grafana"},
    "VITALS_GATEWAY_PASSWORD": {"timescaledb", "gateway"},
    "GRAFANA_ADMIN_PASSWORD": {"grafana"},
    # The alerter signs pages with it, the pager verifies them.
    "VITALS_WEBHOOK_SECRET": {"alerter", "pager"},
    "VITALS_ALERTER_API_TOKEN": {"alerter"},
    # Signs model snapshots (trainer) and verifies them before loading (worker).
    "VITALS_SNAPSHOT_KEY": {"trainer", "worker"},
    # Grafana's contact point sends it to the pager's /grafana (grafana/provisioning/alerting).
    "VITALS_PAGER_GRAFANA_TOKEN": {"grafana", "pager"},
    # Kafka's SCRAM users: kafka-config formats them into the broker; each service logs in as its own.
    "VITALS_KAFKA_ADMIN_PASSWORD": {"kafka-config", "kafka-init"},
    "VITALS_KAFKA_WORKER_PASSWORD": {"kafka-config", "worker"},
    "VITALS_KAFKA_TRAINER_PASSWORD": {"kafka-config", "trainer"},
    "VITALS_KAFKA_ALERTER_PASSWORD": {"kafka-config", "alerter"},
    "VITALS_KAFKA_GATEWAY_PASSWORD": {"kafka-config", "gateway"},
    "VITALS_KAFKA_SIMULATOR_PASSWORD": {"kafka-config", "simulator"},
    # The tools' principals: `vitalrisk replay` straight to Kafka, `vitalrisk deadletters`.
    "VITALS_KAFKA_DEVICE_PASSWORD": {"kafka-config", "device"},
    "VITALS_KAFKA_OPERATOR_PASSWORD": {"kafka-config", "operator"},
}
#: The volume holding the stack's CA and certificates (the certs service writes it).
CERTS_VOLUME = "certs"
#: The user each TLS server's container runs as, who must own its key: apache/kafka's appuser, and
#: postgres of the Alpine-based timescale/timescaledb image, and vitalrisk of the project's image, whose
#: gateway and alerter API serve HTTPS.
KEY_OWNERS = {"kafka": 1000, "timescaledb": 70, "gateway": 10001, "alerter": 10001}
DATABASE_URL_VARIABLES = ("VITALS_DATABASE_URL", "VITALS_ADMIN_DATABASE_URL", "VITALS_GATEWAY_DATABASE_URL")
#: Distinct dummy values, long enough not to occur by chance in the resolved file.
DUMMY_SECRETS = {name: f"dummy-{name.lower()}-7c1e" for name in SECRET_AUDIENCE}

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|SNAPSHOT_KEY", re.IGNORECASE)
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
URL_PASSWORD = re.compile(r"://[^/@\s:]+:([^@\s]+)@")
HEALTH_CONDITIONS = {"service_healthy", "service_completed_successfully"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

needs_compose = pytest.mark.skipif(
    not Path(DOCKER_COMPOSE).is_file(),
    reason=f"docker-compose not installed ({DOCKER_COMPOSE}); .ci/run installs Debian's package",
)


# --- running docker-compose ------------------------------------------------------------------


def run_compose(
    *args: str, secrets: dict[str, str], compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose -f FILE ARGS`` with only ``secrets`` in a minimal environment.

    An empty ``--env-file`` keeps a developer's ``.env`` (and shell variables) out of the test.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(secrets)
    with tempfile.TemporaryDirectory() as tmp:
        empty_env = Path(tmp) / "empty.env"
        empty_env.write_text("")
        return subprocess.run(
            [DOCKER_COMPOSE, "--env-file", str(empty_env), "-f", str(compose_file), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMPOSE_TIMEOUT_S,
            check=False,
        )


def yaml_to_data(text: str) -> Any:
    """Parse YAML with PyYAML: in-process if importable, else with docker-compose's own Python.

    Debian's docker-compose (v1) is a Python program that depends on python3-yaml.
    """
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    first_line = Path(DOCKER_COMPOSE).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    if not (first_line.startswith("#!") and "python" in first_line):
        pytest.skip("no PyYAML here and docker-compose is not a Python program to borrow it from")
    interpreter = first_line[2:].split()
    code = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    out = subprocess.run(
        [*interpreter, "-c", code], input=text, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def resolved_config(
    *extra: str, compose_file: Path = COMPOSE_FILE, secrets: dict[str, str] | None = None
) -> dict[str, Any]:
    """The file as docker-compose resolves it (``config``), parsed."""
    proc = run_compose(
        "config", *extra, secrets=DUMMY_SECRETS if secrets is None else secrets,
        compose_file=compose_file,
    )
    assert proc.returncode == 0, proc.stderr
    data = yaml_to_data(proc.stdout)
    assert isinstance(data, dict) and data.get("services"), proc.stdout
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """Resolved with the dummy secrets interpolated."""
    return resolved_config()


@pytest.fixture(scope="module")
def raw_config() -> dict[str, Any]:
    """Resolved without interpolation: ``${...}`` references as written."""
    return resolved_config("--no-interpolate", secrets={})


# --- the checks: each returns the faults it finds --------------------------------------------


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def unpinned_images(cfg: dict[str, Any]) -> list[str]:
    faults = []
    for name, svc in cfg["services"].items():
        image = svc.get("image")
        if image is None:
            faults.append(f"{name}: no image name (an unnamed build is not pinned)")
        elif "@sha256:" not in image:
            _, colon, tag = image.rpartition(":")
            if not colon or "/" in tag or tag == "latest":
                faults.append(f"{name}: image {image!r} has no version tag")
    return faults


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, short syntax (v1 prints it) or long (v2 prints it)."""
    pairs = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            pairs.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, _, rest = str(volume).partition(":")
            pairs.append((source, rest.split(":", 1)[0]))
    return pairs


def exposed_ports(cfg: dict[str, Any]) -> list[str]:
    faults = []
    for name, svc in cfg["services"].items():
        if svc.get("network_mode") == "host":
            faults.append(f"{name}: network_mode host publishes every port on every interface")
        for port in svc.get("ports") or []:
            if isinstance(port, dict):  # long syntax (docker compose v2 prints this)
                host_ip = port.get("host_ip", "")
            else:  # "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]"
                parts = str(port).split("/", 1)[0].split(":")
                host_ip = ":".join(parts[:-2]) if len(parts) >= 3 else ""
            if host_ip != "127.0.0.1":
                faults.append(f"{name}: port {port!r} is not bound to 127.0.0.1")
    return faults


def literal_secrets(raw_cfg: dict[str, Any]) -> list[str]:
    """Secret-named variables and URL passwords that are not required ``${VAR:?...}`` references."""
    faults = []
    for name, svc in raw_cfg["services"].items():
        for key, value in environment(svc).items():
            if value is None:  # passed through from the caller's environment, nothing written
                continue
            value = str(value)
            if SECRET_NAME.search(key) and not REQUIRED_REF.fullmatch(value):
                if not (key.endswith("_FILE") and value.startswith("/run/secrets/")):
                    faults.append(f"{name}: {key} is not a required ${{VAR:?...}} reference")
            for password in URL_PASSWORD.findall(value):
                if not REQUIRED_REF.fullmatch(password):
                    faults.append(f"{name}: {key} has a literal password in its URL")
    return faults


def defaulted_secrets(compose_text: str) -> list[str]:
    """Secret variables referenced in the source with a default instead of ``:?`` (required)."""
    return [
        f"${{{var}{modifier}}}"
        for var, modifier in VAR_REF.findall(compose_text)
        if SECRET_NAME.search(var) and not modifier.startswith(":?")
    ]


def unsupervised_services(cfg: dict[str, Any]) -> list[str]:
    services = cfg["services"]
    conditions = {name: depends_on(svc) for name, svc in services.items()}
    one_shot = {
        dep for deps in conditions.values()
        for dep, cond in deps.items() if cond == "service_completed_successfully"
    }
    awaited_healthy = {
        dep
        for deps in conditions.values()
        for dep, cond in deps.items()
        if cond == "service_healthy"
    }

    def has_healthcheck(svc: dict[str, Any]) -> bool:
        check = svc.get("healthcheck") or {}
        return bool(check.get("test")) and not check.get("disable") and check["test"] != ["NONE"]

    faults = []
    for name, svc in services.items():
        deps = conditions[name]
        if name in one_shot:
            if svc.get("restart") not in (None, "no"):
                faults.append(f"{name}: one-shot service restarts ({svc.get('restart')})")
            continue
        waits = bool(deps) and all(cond in HEALTH_CONDITIONS for cond in deps.values())
        if not (has_healthcheck(svc) or waits):
            faults.append(f"{name}: long-running, with neither a healthcheck nor health conditions")
        for dep, cond in deps.items():
            if cond not in HEALTH_CONDITIONS:
                faults.append(f"{name}: starts as soon as {dep} starts ({cond})")
        if name in awaited_healthy and not has_healthcheck(svc):
            faults.append(f"{name}: others wait for it to be healthy but it has no healthcheck")
    return faults


def vitalrisk_command(service: dict[str, Any]) -> argparse.Namespace | None:
    """The service's command as ``vitalrisk`` parses it; ``None`` if it is not one (or invalid)."""
    command = [str(part) for part in service.get("command") or []]
    if "build" not in service or not command:
        return None
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser().parse_args(command)
        except SystemExit:
            return None


def services_running(cfg: dict[str, Any], command: str) -> dict[str, argparse.Namespace]:
    """Services whose command is ``vitalrisk COMMAND ...``, with their parsed arguments."""
    found = {name: vitalrisk_command(svc) for name, svc in cfg["services"].items()}
    return {name: args for name, args in found.items() if args is not None and args.command == command}


def metrics_host_faults(cfg: dict[str, Any]) -> list[str]:
    """Services serving /metrics on their container's loopback, where Prometheus cannot scrape them."""
    default_host = Settings.model_fields["metrics_host"].default
    faults = []
    for name, svc in cfg["services"].items():
        env = environment(svc)
        if str(env.get("VITALS_METRICS_PORT", "0")) == "0":
            continue
        host = str(env.get("VITALS_METRICS_HOST", default_host))
        if host in LOOPBACK:
            faults.append(f"{name}: /metrics binds {host} inside its container")
    return faults


def kafka_retention_faults(props: dict[str, str]) -> list[str]:
    """Time-based retention would delete simulated records (event-time timestamps months old)."""
    if not props:
        return ["kafka: no server.properties"]
    faults = []
    if props.get("log.retention.ms") != "-1":
        faults.append(f"kafka: log.retention.ms is {props.get('log.retention.ms')!r}, not -1")
    size = props.get("log.retention.bytes", "")
    if not (size.isdigit() and int(size) > 0):
        faults.append(f"kafka: log.retention.bytes is {size or 'unset'}: the log grows without bound")
    return faults


def mounted_volume(service: dict[str, Any], path: str) -> str | None:
    """The volume (or host path) mounted where ``path`` lies in ``service``'s container, if any."""
    best = None
    for source, target in mounts(service):
        if (path == target or path.startswith(target.rstrip("/") + "/")) and (best is None or len(target) > len(best[1])):
            best = (source, target)
    return best[0] if best else None


def kafka_client_faults(cfg: dict[str, Any], raw_cfg: dict[str, Any]) -> list[str]:
    """Every Kafka client: SASL_SSL as one principal of the ACL table, the stack's CA mounted, its own password."""
    faults = []
    for name, svc in cfg["services"].items():
        env = environment(svc)
        if "VITALS_KAFKA_BOOTSTRAP" not in env:
            continue
        protocol = env.get("VITALS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        if protocol != "SASL_SSL":
            faults.append(f"{name}: speaks {protocol} to Kafka, not SASL_SSL")
        user = env.get("VITALS_KAFKA_USERNAME")
        acls_command = (vitalrisk_command(svc) or argparse.Namespace(command=None)).command == "infra"
        if user not in PRINCIPALS and not (user == ADMIN and acls_command):
            faults.append(f"{name}: Kafka principal {user!r} is not a service principal of infra/kafka_acls.py")
        ca = str(env.get("VITALS_KAFKA_CA_FILE", ""))
        if mounted_volume(svc, ca) != CERTS_VOLUME:
            faults.append(f"{name}: VITALS_KAFKA_CA_FILE {ca or '(unset)'} is not in the {CERTS_VOLUME} volume")
        raw = str(environment(raw_cfg["services"].get(name, {})).get("VITALS_KAFKA_PASSWORD", ""))
        refs = VAR_REF.findall(raw)
        if user and [(var, mod[:2]) for var, mod in refs] != [(password_variable(user), ":?")]:
            faults.append(f"{name}: VITALS_KAFKA_PASSWORD is not the required ${{{password_variable(user)}:?...}}")
    users = [environment(svc).get("VITALS_KAFKA_USERNAME") for svc in cfg["services"].values()
             if environment(svc).get("VITALS_KAFKA_USERNAME") in PRINCIPALS]
    faults += [f"principal {user} is shared by services" for user in sorted(set(users)) if users.count(user) > 1]
    return faults


def database_tls_faults(cfg: dict[str, Any]) -> list[str]:
    """Every database URL verifies the server (verify-full) against a CA in the certs volume."""
    faults = []
    for name, svc in cfg["services"].items():
        for variable in DATABASE_URL_VARIABLES:
            url = environment(svc).get(variable)
            if url is None:
                continue
            query = dict(part.split("=", 1) for part in urlsplit(str(url)).query.split("&") if "=" in part)
            if query.get("sslmode") != "verify-full":
                faults.append(f"{name}: {variable} has sslmode={query.get('sslmode', '(unset: prefer)')}")
            root = query.get("sslrootcert", "")
            if mounted_volume(svc, root) != CERTS_VOLUME:
                faults.append(f"{name}: {variable}'s sslrootcert {root or '(unset)'} is not in the {CERTS_VOLUME} volume")
    return faults


def grafana_tls_faults(document: dict[str, Any], grafana: dict[str, Any]) -> list[str]:
    """Grafana's PostgreSQL data sources verify the server against the stack's CA, as a file Grafana has."""
    faults = []
    for source in document["datasources"]:
        if "postgres" not in source["type"]:
            continue
        data = source.get("jsonData") or {}
        if data.get("sslmode") != "verify-full":
            faults.append(f"{source['name']}: sslmode {data.get('sslmode')!r}, not verify-full")
        if data.get("tlsConfigurationMethod") != "file-path":
            faults.append(f"{source['name']}: tlsConfigurationMethod {data.get('tlsConfigurationMethod')!r}")
        if mounted_volume(grafana, str(data.get("sslRootCertFile", ""))) != CERTS_VOLUME:
            faults.append(f"{source['name']}: sslRootCertFile {data.get('sslRootCertFile')!r} is not in the "
                          f"{CERTS_VOLUME} volume mounted in Grafana")
    return faults


def postgres_tls_faults(service: dict[str, Any]) -> list[str]:
    """The TimescaleDB server turns TLS on with its certificate and key from the certs volume."""
    command = [str(part) for part in service.get("command") or []]
    options = dict(command[i + 1].split("=", 1) for i, part in enumerate(command[:-1]) if part == "-c")
    faults = []
    if options.get("ssl") != "on":
        faults.append("timescaledb: ssl is not on")
    for key in ("ssl_cert_file", "ssl_key_file"):
        if mounted_volume(service, options.get(key, "")) != CERTS_VOLUME:
            faults.append(f"timescaledb: {key} {options.get(key, '(unset)')} is not in the {CERTS_VOLUME} volume")
    if mounted_volume(service, f"/docker-entrypoint-initdb.d/{TLS_ONLY_SCRIPT.name}") != str(TLS_ONLY_SCRIPT):
        faults.append(f"timescaledb: {TLS_ONLY_SCRIPT.name} is not an init script: pg_hba lets clients in without TLS")
    return faults


def broker_faults(props: dict[str, str]) -> list[str]:
    """The broker's generated configuration: SASL_SSL to other containers, ACLs enforced, no topic made on its own."""
    protocols = dict(item.split(":", 1) for item in props.get("listener.security.protocol.map", "").split(",")
                     if ":" in item)
    faults = []
    for listener in filter(None, props.get("listeners", "").split(",")):
        name, _, address = listener.partition("://")
        host = address.rpartition(":")[0]
        protocol = protocols.get(name, name)
        if host not in LOOPBACK and protocol != "SASL_SSL":
            faults.append(f"kafka: listener {listener} ({protocol}) is reachable from other containers")
        if host in LOOPBACK and protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and name != props.get("controller.listener.names"):
            faults.append(f"kafka: listener {listener} is plaintext")
    if props.get("authorizer.class.name", "").rpartition(".")[2] != "StandardAuthorizer":
        faults.append("kafka: no StandardAuthorizer: ACLs are not enforced")
    if props.get("allow.everyone.if.no.acl.found") != "false":
        faults.append("kafka: a resource without ACLs is open to everyone")
    if props.get("auto.create.topics.enable") != "false":
        faults.append("kafka: any principal may create a topic by naming it")
    if props.get("inter.broker.listener.name") not in protocols or protocols[props["inter.broker.listener.name"]] != "SASL_SSL":
        faults.append("kafka: the inter-broker listener is not SASL_SSL")
    return faults


def shared_secret_faults(raw_cfg: dict[str, Any]) -> list[str]:
    """The pager must verify with the variable the alerter signs with (read from the raw file)."""
    services = raw_cfg["services"]
    alerters, pagers = services_running(raw_cfg, "alerter"), services_running(raw_cfg, "pager")
    if not alerters or not pagers:
        return [f"alerters {sorted(alerters)}, pagers {sorted(pagers)}: need both"]
    faults, signing = [], set()
    for name in alerters:
        refs = VAR_REF.findall(str(environment(services[name]).get("VITALS_WEBHOOK_SECRET", "")))
        if len(refs) != 1:
            faults.append(f"{name}: VITALS_WEBHOOK_SECRET is not one ${{VAR:?...}} reference")
        signing |= {var for var, _ in refs}
    for name, args in pagers.items():
        variable = args.secret_env or "VITALS_WEBHOOK_SECRET"
        refs = {var for var, _ in VAR_REF.findall(str(environment(services[name]).get(variable, "")))}
        if not refs or refs != signing:
            faults.append(f"{name}: verifies with {variable} = {sorted(refs)}, the alerter signs with {sorted(signing)}")
    return faults


def receiver_faults(cfg: dict[str, Any]) -> list[str]:
    """The alerter's receivers are compose services listening, beyond loopback, on the port named."""
    services = cfg["services"]
    pagers = services_running(cfg, "pager")
    faults = []
    for name in services_running(cfg, "alerter"):
        env = environment(services[name])
        receivers = parse_receivers(str(env.get("VITALS_WEBHOOK_RECEIVERS",
                                                Settings.model_fields["webhook_receivers"].default)))
        routes = str(env.get("VITALS_WEBHOOK_ROUTES", Settings.model_fields["webhook_routes"].default))
        try:
            Router.parse(routes, frozenset(receivers))
        except Exception as exc:  # noqa: BLE001 - InvalidPolicy; the message is the fault
            faults.append(f"{name}: {exc}")
        for receiver, url in receivers.items():
            target = urlsplit(url)
            args = pagers.get(target.hostname or "")
            if args is None:
                faults.append(f"{name}: receiver {receiver} ({url}) is no pager service of this file")
                continue
            if target.port != args.port:
                faults.append(f"{name}: receiver {receiver} posts to port {target.port}, the pager listens on {args.port}")
            if args.host in LOOPBACK:
                faults.append(f"{name}: receiver {receiver}: the pager listens on {args.host} inside its container")
    return faults


# --- what the one-shot services generate ----------------------------------------------------


@dataclass
class Generated:
    """The volumes the one-shot services wrote, each a folder under ``root``, and the broker's properties."""

    root: Path
    props: dict[str, str]

    def host_path(self, service: dict[str, Any], path: str) -> Path:
        """Where ``path`` in ``service``'s container is here."""
        for source, target in sorted(mounts(service), key=lambda pair: -len(pair[1])):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return self.root / Path(source).name / path[len(target):].lstrip("/")
        raise AssertionError(f"{path} is in no volume of the service")

    def settings(self, service: dict[str, Any]) -> Settings:
        """What ``vitalrisk`` reads from ``service``'s environment, its certs volume paths made local."""
        certs = str(self.root / CERTS_VOLUME)
        values = {key.removeprefix("VITALS_").lower(): str(value).replace("/certs/", certs + "/")
                  for key, value in environment(service).items() if key.startswith("VITALS_")}
        return Settings(**values)


def parse_properties(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def generated(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """Run the certs and kafka-config services' commands as their containers would, into local folders."""
    services = config["services"]
    gen = Generated(tmp_path_factory.mktemp("volumes"), {})
    certs = vitalrisk_command(services["certs"])
    assert certs is not None and certs.action == "compose-certs", services["certs"].get("command")
    root = os.geteuid() == 0  # only root may give each key to its container's user, as the service does
    hosts = {host: uid if root else None for host, uid in parse_hosts(certs.hosts).items()}
    assert make_certs(gen.host_path(services["certs"], str(certs.out)), hosts)
    kafka_config = vitalrisk_command(services["kafka-config"])
    assert kafka_config is not None and kafka_config.action == "compose-kafka"
    local_certs = gen.host_path(services["kafka-config"], str(kafka_config.certs))
    assert local_certs == gen.root / CERTS_VOLUME
    argv = ["infra", "compose-kafka", "--certs", str(local_certs),
            "--out", str(gen.host_path(services["kafka-config"], str(kafka_config.out)))]
    if root and kafka_config.owner is not None:
        argv += ["--owner", str(kafka_config.owner)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITALS_")}
    env.update({key: str(value) for key, value in environment(services["kafka-config"]).items()})
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=COMPOSE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert not any(value in proc.stdout + proc.stderr for value in DUMMY_SECRETS.values())
    # The start script reads it where the kafka container mounts the volume.
    text = gen.host_path(services["kafka"], "/kafka-config/server.properties").read_text()
    gen.props.update(parse_properties(text.replace(str(local_certs), "/certs")))
    return gen


# --- the real file ---------------------------------------------------------------------------


@needs_compose
def test_config_validates_with_the_passwords_set() -> None:
    proc = run_compose("config", "-q", secrets=DUMMY_SECRETS)
    assert proc.returncode == 0, proc.stderr


@needs_compose
@pytest.mark.parametrize("missing", sorted(SECRET_AUDIENCE))
def test_config_fails_without_each_password(missing: str) -> None:
    secrets = {k: v for k, v in DUMMY_SECRETS.items() if k != missing}
    proc = run_compose("config", "-q", secrets=secrets)
    assert proc.returncode != 0, f"the stack validates without {missing}: it has a default"
    assert missing in proc.stderr


def test_every_secret_variable_is_required_and_known() -> None:
    text = COMPOSE_FILE.read_text()
    assert defaulted_secrets(text) == []
    referenced = {var for var, _ in VAR_REF.findall(text) if SECRET_NAME.search(var)}
    assert referenced == set(SECRET_AUDIENCE)


@needs_compose
def test_images_are_pinned(config: dict[str, Any]) -> None:
    assert unpinned_images(config) == []


@needs_compose
def test_project_image_is_tagged_with_the_project_version(config: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    built = {name: svc["image"] for name, svc in config["services"].items() if "build" in svc}
    assert set(built) >= {"migrate", "gateway", "worker", "simulator", "alerter", "pager"}
    assert set(built.values()) == {f"vitalrisk:{version}"}


@needs_compose
def test_ports_are_published_on_loopback_only(config: dict[str, Any]) -> None:
    assert exposed_ports(config) == []
    assert any(svc.get("ports") for svc in config["services"].values())


@needs_compose
def test_no_password_is_written_in_the_file(raw_config: dict[str, Any]) -> None:
    assert literal_secrets(raw_config) == []


@needs_compose
def test_each_password_reaches_only_its_services(config: dict[str, Any]) -> None:
    seen = {
        secret: {
            name for name, svc in config["services"].items() if value in json.dumps(svc)
        }
        for secret, value in DUMMY_SECRETS.items()
    }
    assert seen == SECRET_AUDIENCE


@needs_compose
def test_pipeline_connects_as_least_privileged_roles(config: dict[str, Any]) -> None:
    services = config["services"]
    db_env = environment(services["timescaledb"])
    init_sql = INIT_SCRIPT.read_text()
    urls = {
        name: urlsplit(environment(svc)[variable])
        for name, svc in services.items()
        for variable in ("VITALS_DATABASE_URL", "VITALS_ADMIN_DATABASE_URL", "VITALS_GATEWAY_DATABASE_URL")
        if variable in environment(svc)
    }
    assert database_tls_faults(config) == []
    assert {name: url.username for name, url in urls.items()} == {
        "migrate": "vitalrisk_owner",
        "gateway": "vitalrisk_gateway",
        "worker": "vitalrisk_worker",
        "alerter": "vitalrisk_alerter",
        "trainer": "vitalrisk_trainer",
    }
    for name, url in urls.items():
        assert url.username != db_env["POSTGRES_USER"], name
        database = f"/{db_env['POSTGRES_DB']}"
        assert (url.hostname, url.port, url.path) == ("timescaledb", 5432, database), name
        assert re.search(rf"CREATE ROLE {url.username}\s+LOGIN NOSUPERUSER ", init_sql), name
    assert environment(services["grafana"])["VITALS_PG_READER"] == "vitalrisk_reader"
    assert re.search(r"CREATE ROLE vitalrisk_reader\s+LOGIN NOSUPERUSER ", init_sql)
    assert "ALTER DATABASE :\"db\" OWNER TO vitalrisk_owner" in init_sql
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb" in init_sql


@needs_compose
@pytest.mark.parametrize("command", [["migrate"], ["devices", "list"]])
def test_the_migrate_service_acts_as_the_schema_owner(config: dict[str, Any], command: list[str]) -> None:
    """Run with the migrate service's environment, the command reaches for the owner's server.

    Outside the compose network the host ``timescaledb`` does not resolve: "is it running?"
    (exit 1) shows the URL was taken; a settings error (exit 2) would mean it was not.
    """
    service = config["services"]["migrate"]
    assert service["command"] == ["migrate"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITALS_")}
    env.update(environment(service))
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=COMPOSE_TIMEOUT_S)
    assert proc.returncode == 1, proc.stderr
    assert "timescaledb:5432" in proc.stderr and "Traceback" not in proc.stderr
    assert DUMMY_SECRETS["VITALS_OWNER_PASSWORD"] not in proc.stderr


@needs_compose
def test_init_script_is_mounted_and_executable(config: dict[str, Any]) -> None:
    target = f"/docker-entrypoint-initdb.d/{INIT_SCRIPT.name}"
    assert (str(INIT_SCRIPT), target) in mounts(config["services"]["timescaledb"])
    assert os.access(INIT_SCRIPT, os.X_OK), "the entrypoint would source it, not run it"
    proc = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_compose
def test_long_running_services_are_supervised(config: dict[str, Any]) -> None:
    assert unsupervised_services(config) == []
    assert depends_on(config["services"]["worker"]) == {
        "kafka-init": "service_completed_successfully",
        "timescaledb": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    alerter = depends_on(config["services"]["alerter"])
    assert alerter["kafka-init"] == "service_completed_successfully"
    assert alerter["migrate"] == "service_completed_successfully"
    # The one-shots in order: certificates, the broker's configuration, the broker, its topics and ACLs.
    services = config["services"]
    assert depends_on(services["kafka-config"]) == {"certs": "service_completed_successfully"}
    assert depends_on(services["kafka"]) == {"kafka-config": "service_completed_successfully"}
    assert depends_on(services["kafka-init"]) == {"kafka": "service_healthy"}
    assert depends_on(services["timescaledb"]) == {"certs": "service_completed_successfully"}


@needs_compose
def test_kafka_matches_what_the_pipeline_expects(config: dict[str, Any], generated: Generated) -> None:
    services, props = config["services"], generated.props
    advertised = {listener.split("://", 1)[1] for listener in props["advertised.listeners"].split(",")}
    clients = {
        name: environment(svc)["VITALS_KAFKA_BOOTSTRAP"]
        for name, svc in services.items()
        if "VITALS_KAFKA_BOOTSTRAP" in environment(svc)
    }
    assert set(clients) >= {"worker", "simulator", "alerter", "gateway", "trainer", "kafka-init"}
    for name, bootstrap in clients.items():
        assert bootstrap in advertised, name
        wanted = "service_healthy" if name == "kafka-init" else "service_completed_successfully"
        assert depends_on(services[name]).get("kafka-init" if name != "kafka-init" else "kafka") == wanted, name
    assert props["process.roles"] == "broker,controller"
    assert int(props["num.partitions"]) == Settings.model_fields["partitions"].default
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert int(props[key]) == 1, key
    # Where the broker keeps its log, and the files it reads, are the kafka container's volumes.
    kafka = services["kafka"]
    assert mounted_volume(kafka, props["log.dirs"]) == "kafka-data"
    for key in ("ssl.keystore.location", "ssl.truststore.location"):
        assert mounted_volume(kafka, props[key]) == CERTS_VOLUME, key
    assert kafka["entrypoint"][-1] == "/opt/vitalrisk/kafka-start.sh"
    assert (str(KAFKA_START), "/opt/vitalrisk/kafka-start.sh") in mounts(kafka)
    assert mounted_volume(kafka, "/kafka-config/server.properties") == "kafka-config"


@needs_compose
def test_the_broker_speaks_only_sasl_ssl_to_other_containers(generated: Generated) -> None:
    assert broker_faults(generated.props) == []
    controller = [item for item in generated.props["listeners"].split(",") if item.startswith("CONTROLLER://")]
    assert controller == ["CONTROLLER://127.0.0.1:9093"], "the controller must bind the container's loopback"
    assert generated.props["listener.name.controller.ssl.client.auth"] == "required"


@needs_compose
def test_every_kafka_client_is_its_own_principal_over_sasl_ssl(config: dict[str, Any], raw_config: dict[str, Any],
                                                                generated: Generated) -> None:
    assert kafka_client_faults(config, raw_config) == []
    services = config["services"]
    users = {name: environment(svc)["VITALS_KAFKA_USERNAME"] for name, svc in services.items()
             if "VITALS_KAFKA_USERNAME" in environment(svc)}
    assert users == {"kafka-init": ADMIN, "gateway": "gateway", "worker": "worker", "trainer": "trainer",
                     "simulator": "simulator", "alerter": "alerter", "device": "device", "operator": "operator"}
    assert set(users.values()) == {ADMIN, *PRINCIPALS}, "every principal of infra/kafka_acls.py has its user"
    for name in users:  # what each process reads from its environment is a valid configuration
        settings = generated.settings(services[name])
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_check_hostname, name
        assert settings.kafka_ca_file == ca_file(generated.root / CERTS_VOLUME), name
    # Every principal a service runs as has a SCRAM user in the broker (scram-args), none more.
    scram = generated.host_path(services["kafka"], "/kafka-config/scram-args").read_text().split()
    made = {arg.split("name=", 1)[1].split(",", 1)[0] for arg in scram if "name=" in arg}
    assert made == set(users.values())


@needs_compose
def test_each_tls_key_belongs_to_its_container_s_user_alone(config: dict[str, Any], generated: Generated) -> None:
    certs = vitalrisk_command(config["services"]["certs"])
    assert certs is not None and parse_hosts(certs.hosts) == KEY_OWNERS
    for host, uid in KEY_OWNERS.items():
        key = generated.root / CERTS_VOLUME / host / "server.key"
        assert key.stat().st_mode & 0o077 == 0, f"{key}: PostgreSQL refuses a key others may read"
        if os.geteuid() == 0:
            assert key.stat().st_uid == uid, host
    assert config["services"]["certs"].get("cap_add") == ["CHOWN"]
    again = subprocess.run([sys.executable, "-m", "stream.cli", "infra", "compose-certs", "--out",
                            str(generated.root / CERTS_VOLUME), "--hosts", certs.hosts], cwd=ROOT,
                           env={k: v for k, v in os.environ.items() if not k.startswith("VITALS_")},
                           capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S)
    assert again.returncode == 0 and again.stdout.startswith("kept"), again.stderr  # `up` again keeps them


@needs_compose
def test_timescaledb_serves_tls_only_and_grafana_verifies_it(config: dict[str, Any], generated: Generated) -> None:
    services = config["services"]
    assert postgres_tls_faults(services["timescaledb"]) == []
    assert grafana_tls_faults(datasources_document(), services["grafana"]) == []
    certs = generated.root / CERTS_VOLUME / "timescaledb"
    assert (certs / "server.crt").exists() and (certs / "server.key").exists()
    assert environment(services["grafana"])["VITALS_PG_HOST"].split(":")[0] == "timescaledb"  # the cert's name


def test_the_init_script_leaves_only_hostssl_for_other_containers(tmp_path: Path) -> None:
    # pg_hba.conf as the image leaves it: initdb's loopback trust lines, then the entrypoint's line.
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n\n"
                   "host all all all scram-sha-256\n")
    done = subprocess.run(["bash", str(TLS_ONLY_SCRIPT)], env={"PGDATA": str(tmp_path), "PATH": os.environ["PATH"]},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert hba.read_text().splitlines()[-1] == "hostssl all all all scram-sha-256"
    assert "host all all 127.0.0.1/32 trust" in hba.read_text()
    # A file that still lets a network client in without TLS fails the initialisation.
    hba.write_text("host all all 0.0.0.0/0 md5\nhost all all all scram-sha-256\n")
    done = subprocess.run(["bash", str(TLS_ONLY_SCRIPT)], env={"PGDATA": str(tmp_path), "PATH": os.environ["PATH"]},
                          capture_output=True, text=True)
    assert done.returncode == 1 and "without TLS" in done.stderr


@needs_compose
def test_devices_reach_kafka_only_through_the_gateway(config: dict[str, Any], generated: Generated) -> None:
    services = config["services"]
    assert not services["kafka"].get("ports"), "the broker is published: devices could bypass the gateway"
    assert "127.0.0.1" not in generated.props["advertised.listeners"]
    # What `vitalrisk gateway` reads from this environment is a valid configuration, listening
    # inside its container on the port published on the host's loopback and scraped by Prometheus.
    settings = generated.settings(services["gateway"])
    assert settings.gateway_host == "0.0.0.0"
    published = {str(port).split("/", 1)[0] for port in services["gateway"].get("ports") or []}
    assert published == {f"127.0.0.1:{settings.gateway_port}:{settings.gateway_port}"}
    assert depends_on(services["gateway"]) == {"kafka-init": "service_completed_successfully",
                                               "timescaledb": "service_healthy",
                                               "migrate": "service_completed_successfully"}
    scrape = (ROOT / "grafana" / "prometheus" / "prometheus.yml").read_text()
    assert re.search(rf"- gateway\n\s+type: A\n\s+port: {settings.gateway_port}\n", scrape)


@needs_compose
@pytest.mark.parametrize("name", ["gateway", "alerter"])
def test_the_gateway_and_the_alerter_api_serve_https_with_their_certificates(config: dict[str, Any],
                                                                            generated: Generated, name: str) -> None:
    """Their certificate (named for the service, localhost and 127.0.0.1) and key come from the certs
    volume; what the service reads is a TLS context that loads; the healthcheck verifies it."""
    service = config["services"][name]
    settings = generated.settings(service)
    listener = gateway_listener(settings) if name == "gateway" else alerter_listener(settings)
    assert listener.tls and listener.host == "0.0.0.0" and not listener.allow_plaintext
    assert listener.cert_file is not None and listener.key_file is not None
    for path in (listener.cert_file, listener.key_file):
        assert path.parent == generated.root / CERTS_VOLUME / name, path
    assert server_tls(listener) is not None  # the pair loads and matches
    names = x509.load_pem_x509_certificate(listener.cert_file.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert {name, "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    check = " ".join(service["healthcheck"]["test"])
    assert f"https://localhost:{listener.port}/healthz" in check and "cafile='/certs/ca.pem'" in check


@needs_compose
def test_prometheus_scrapes_the_gateway_over_https_with_the_stack_s_ca(config: dict[str, Any]) -> None:
    scrape = yaml_to_data((ROOT / "grafana" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in scrape["scrape_configs"] if job["job_name"] == "vitalrisk-gateway"]
    assert job["scheme"] == "https" and job["tls_config"] == {"ca_file": "/certs/ca.pem"}
    prometheus = config["services"]["prometheus"]
    assert mounted_volume(prometheus, "/certs/ca.pem") == CERTS_VOLUME
    assert depends_on(prometheus).get("certs") == "service_completed_successfully"


@needs_compose
def test_every_acl_principal_has_a_password_and_a_service_to_run_as(config: dict[str, Any]) -> None:
    kafka_config = environment(config["services"]["kafka-config"])
    for principal in (ADMIN, *PRINCIPALS):
        assert password_variable(principal) in kafka_config, principal
    for tool in ("device", "operator"):  # on demand only: `docker-compose run --rm device replay ...`
        assert config["services"][tool].get("profiles") == ["tools"], tool


@needs_compose
def test_kafka_keeps_records_by_size_not_age(generated: Generated) -> None:
    assert kafka_retention_faults(generated.props) == []
    assert int(generated.props["log.retention.ms"]) == -1


@needs_compose
def test_metrics_are_served_to_prometheus(config: dict[str, Any]) -> None:
    assert metrics_host_faults(config) == []
    for name in ("worker", "alerter"):
        env = environment(config["services"][name])
        assert env["VITALS_METRICS_HOST"] == "0.0.0.0", name
        assert int(env["VITALS_METRICS_PORT"]) > 0, name


@needs_compose
def test_alerter_and_pager_share_the_webhook_secret(raw_config: dict[str, Any], config: dict[str, Any]) -> None:
    assert shared_secret_faults(raw_config) == []
    services = raw_config["services"]
    assert (environment(services["alerter"])["VITALS_WEBHOOK_SECRET"]
            == environment(services["pager"])["VITALS_WEBHOOK_SECRET"])
    resolved = {name: environment(config["services"][name])["VITALS_WEBHOOK_SECRET"] for name in ("alerter", "pager")}
    assert resolved == {"alerter": DUMMY_SECRETS["VITALS_WEBHOOK_SECRET"],
                        "pager": DUMMY_SECRETS["VITALS_WEBHOOK_SECRET"]}


@needs_compose
def test_alerter_pages_the_pager(config: dict[str, Any], generated: Generated) -> None:
    assert receiver_faults(config) == []
    assert set(services_running(config, "alerter")) == {"alerter"}
    assert set(services_running(config, "pager")) == {"pager"}
    # What `vitalrisk alerter` reads from this environment is a valid configuration.
    settings = generated.settings(config["services"]["alerter"])
    assert settings.alerter_api_token is not None and settings.webhook_secret is not None
    assert settings.alerter_host == "0.0.0.0"
    published = {str(port).split("/", 1)[0] for port in config["services"]["alerter"].get("ports") or []}
    assert f"127.0.0.1:{settings.alerter_port}:{settings.alerter_port}" in published


@needs_compose
def test_state_lives_in_named_volumes(config: dict[str, Any]) -> None:
    named = set(config.get("volumes") or {})
    data_dirs = {
        "kafka": "/var/lib/kafka/data",
        "timescaledb": "/var/lib/postgresql/data",
        "certs": "/certs",
        "kafka-config": "/kafka-config",
        "grafana": "/var/lib/grafana",
    }
    for name, path in data_dirs.items():
        volumes = mounts(config["services"][name])
        assert any(source in named and target == path for source, target in volumes), name


# --- the checks can fail ---------------------------------------------------------------------

BAD_COMPOSE = """\
services:
  db:
    image: postgres
    environment:
      POSTGRES_PASSWORD: hunter2
      APP_URL: postgresql://app:hunter2@db:5432/app
      ADMIN_TOKEN: ${ADMIN_TOKEN:-changeme}
    ports: ["5432:5432"]
  web:
    image: nginx:latest
    ports: ["0.0.0.0:8080:80", "9000"]
    depends_on: [db]
"""


@needs_compose
def test_checks_catch_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(BAD_COMPOSE)
    cfg = resolved_config(compose_file=bad, secrets={})  # validates with no secrets at all
    raw = resolved_config("--no-interpolate", compose_file=bad, secrets={})
    assert len(unpinned_images(cfg)) == 2
    assert len(exposed_ports(cfg)) == 3
    assert {f.split(":")[0] for f in literal_secrets(raw)} == {"db"}
    assert len(literal_secrets(raw)) == 3  # POSTGRES_PASSWORD, APP_URL, ADMIN_TOKEN
    assert defaulted_secrets(BAD_COMPOSE) == ["${ADMIN_TOKEN:-changeme}"]
    # db and web: neither health-checked nor waiting; web starts as soon as db starts.
    assert len(unsupervised_services(cfg)) == 3
    missing_image = {"services": {"app": {"build": {"context": "."}}}}
    assert unpinned_images(missing_image) == ["app: no image name (an unnamed build is not pinned)"]


BAD_PIPELINE_COMPOSE = """\
services:
  kafka:
    image: apache/kafka:4.1.1
  worker:
    build: .
    image: vitalrisk:0.1.0
    command: ["worker"]
    environment:
      VITALS_METRICS_PORT: "9108"
  alerter:
    build: .
    image: vitalrisk:0.1.0
    command: ["alerter"]
    environment:
      VITALS_WEBHOOK_SECRET: ${ALERTER_WEBHOOK_SECRET:?set it}
      VITALS_WEBHOOK_RECEIVERS: pager=http://pager:8099/webhook;oncall=http://oncall:80/hook
      VITALS_WEBHOOK_ROUTES: critical=pager;warning=nobody
      VITALS_METRICS_HOST: 127.0.0.1
      VITALS_METRICS_PORT: "9109"
  pager:
    build: .
    image: vitalrisk:0.1.0
    command: ["pager", "--port", "9095"]
    environment:
      VITALS_WEBHOOK_SECRET: ${PAGER_WEBHOOK_SECRET:?set it}
"""


@needs_compose
def test_wiring_checks_catch_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(BAD_PIPELINE_COMPOSE)
    secrets = {"ALERTER_WEBHOOK_SECRET": "one-7c1e", "PAGER_WEBHOOK_SECRET": "two-7c1e"}
    cfg = resolved_config(compose_file=bad, secrets=secrets)
    raw = resolved_config("--no-interpolate", compose_file=bad, secrets={})
    # Retention by age (the default 7 days), and no size bound.
    assert len(kafka_retention_faults({"log.retention.hours": "168"})) == 2
    # worker: loopback by default; alerter: loopback explicitly.
    assert sorted(f.split(":")[0] for f in metrics_host_faults(cfg)) == ["alerter", "worker"]
    # Signs with one variable, verifies with another.
    assert [f.split(":")[0] for f in shared_secret_faults(raw)] == ["pager"]
    # Unknown route receiver, a receiver that is no service, the wrong port, a loopback-only pager.
    faults = receiver_faults(cfg)
    assert len(faults) == 4, faults
    assert any("nobody" in f for f in faults) and any("oncall" in f for f in faults)
    assert any("port 8099" in f for f in faults) and any("listens on 127.0.0.1" in f for f in faults)
    assert shared_secret_faults({"services": {}}) and kafka_retention_faults({})


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_pins_its_base_and_runs_vitalrisk_unprivileged() -> None:
    instructions = dockerfile_instructions()
    bases = [arg.split()[0] for op, arg in instructions if op == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    users = [arg.split(":")[0] for op, arg in final_stage if op == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    entrypoints = [json.loads(arg) for op, arg in final_stage if op == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoints == [["vitalrisk"]] and "vitalrisk" in scripts


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` stays out of the build context: the last matching pattern wins, and a
    pattern that matches a folder matches everything under it, as in Docker's matcher."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, alt) for p in prefixes for alt in alternatives):
            excluded = not negated
    return excluded


def test_build_context_has_the_package_and_no_secrets_or_state() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".env", ".git/config", ".venv/bin/python", ".local/kafka/data/x",
                 ".pytest_cache/v", "tests/test_compose.py", "stream/__pycache__/cli.pyc",
                 "infra/kafka/target/kafka.jar", "docker-compose.yml"):
        assert dockerignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "stream/cli.py", "models/news2.py",
                 "sinks/migrations/001_init.sql", "simulators/__init__.py", "infra/kafka/pom.xml"):
        assert not dockerignored(path, patterns), path


BAD_SECURITY_COMPOSE = """\
services:
  worker:
    build: .
    image: vitalrisk:0.1.0
    command: ["worker"]
    environment:
      VITALS_KAFKA_BOOTSTRAP: kafka:9092
      VITALS_DATABASE_URL: postgresql://vitalrisk_worker:${DB_PASSWORD:?set it}@db:5432/v?sslmode=require
  alerter:
    build: .
    image: vitalrisk:0.1.0
    command: ["alerter"]
    environment:
      VITALS_KAFKA_BOOTSTRAP: kafka:9092
      VITALS_KAFKA_SECURITY_PROTOCOL: SASL_SSL
      VITALS_KAFKA_USERNAME: worker
      VITALS_KAFKA_PASSWORD: ${VITALS_KAFKA_WORKER_PASSWORD:?set it}
      VITALS_KAFKA_CA_FILE: /etc/ssl/ca.pem
      VITALS_DATABASE_URL: postgresql://vitalrisk_alerter:${DB_PASSWORD:?set it}@db:5432/v?sslmode=verify-full&sslrootcert=/certs/ca.pem
  trainer:
    build: .
    image: vitalrisk:0.1.0
    command: ["trainer"]
    environment:
      VITALS_KAFKA_BOOTSTRAP: kafka:9092
      VITALS_KAFKA_SECURITY_PROTOCOL: SASL_SSL
      VITALS_KAFKA_USERNAME: root
      VITALS_KAFKA_PASSWORD: ${KAFKA_ROOT_PASSWORD:-changeme}
      VITALS_KAFKA_CA_FILE: /certs/ca.pem
    volumes:
      - certs:/certs:ro
  timescaledb:
    image: timescale/timescaledb:2.17.2-pg16
    command: ["postgres", "-c", "ssl=on", "-c", "ssl_cert_file=/var/lib/postgresql/server.crt"]
    volumes:
      - certs:/certs:ro
  grafana:
    image: grafana/grafana:11.3.1
volumes:
  certs:
"""

#: The old Compose broker (PLAINTEXT between containers, no ACLs), as server.properties.
BAD_BROKER = {
    "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
}


@needs_compose
def test_security_checks_catch_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(BAD_SECURITY_COMPOSE)
    cfg = resolved_config(compose_file=bad, secrets={"DB_PASSWORD": "x-7c1e", "VITALS_KAFKA_WORKER_PASSWORD": "y-7c1e"})
    raw = resolved_config("--no-interpolate", compose_file=bad, secrets={})
    faults = kafka_client_faults(cfg, raw)
    # worker: PLAINTEXT, no principal, no CA; alerter: the worker's principal and a CA outside the volume;
    # trainer: a principal of no ACL row, another's password variable with a default; worker twice.
    assert any(f.startswith("worker: speaks PLAINTEXT") for f in faults), faults
    assert any(f.startswith("worker: Kafka principal None") for f in faults)
    assert any(f.startswith("alerter: VITALS_KAFKA_CA_FILE /etc/ssl/ca.pem") for f in faults)
    assert any(f.startswith("trainer: Kafka principal 'root'") for f in faults)
    assert any(f.startswith("trainer: VITALS_KAFKA_PASSWORD") for f in faults)
    assert "principal worker is shared by services" not in faults  # the worker service has no username
    assert len(faults) == 6, faults
    # sslmode=require verifies nothing; the alerter's CA is named but not mounted.
    db = database_tls_faults(cfg)
    assert sorted(f.split(":")[0] for f in db) == ["alerter", "worker", "worker"], db
    # No key file, a certificate outside the volume, no TLS-only init script.
    assert len(postgres_tls_faults(cfg["services"]["timescaledb"])) == 3
    plain = {"datasources": [{"name": "TimescaleDB", "type": "grafana-postgresql-datasource",
                              "jsonData": {"sslmode": "disable"}}]}
    assert len(grafana_tls_faults(plain, cfg["services"]["grafana"])) == 3
    # The old broker: two plaintext listeners other containers reach, no authorizer, open to all,
    # topics made on demand, plaintext between brokers.
    assert len(broker_faults(BAD_BROKER)) == 6, broker_faults(BAD_BROKER)
