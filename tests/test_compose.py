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
pager verifies); the image runs `vitalrisk` as a non-root user and its build context holds neither
secrets nor local state.
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stream.alerts.routing import Router, parse_receivers
from stream.cli import build_parser
from kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INIT_SCRIPT = ROOT / "sinks" / "docker-init" / "010_vitalrisk_roles.sh"
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
}
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


def kafka_retention_faults(cfg: dict[str, Any]) -> list[str]:
    """Time-based retention would delete simulated records (event-time timestamps months old)."""
    kafka = cfg["services"].get("kafka")
    if kafka is None:
        return ["no kafka service"]
    env = environment(kafka)
    faults = []
    if str(env.get("KAFKA_LOG_RETENTION_MS")) != "-1":
        faults.append(f"kafka: KAFKA_LOG_RETENTION_MS is {env.get('KAFKA_LOG_RETENTION_MS')!r}, not -1")
    size = str(env.get("KAFKA_LOG_RETENTION_BYTES", ""))
    if not (size.isdigit() and int(size) > 0):
        faults.append(f"kafka: KAFKA_LOG_RETENTION_BYTES is {size or 'unset'}: the log grows without bound")
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
        "kafka": "service_healthy",
        "timescaledb": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    alerter = depends_on(config["services"]["alerter"])
    assert alerter["kafka"] == "service_healthy"
    assert alerter["migrate"] == "service_completed_successfully"


@needs_compose
def test_kafka_matches_what_the_pipeline_expects(config: dict[str, Any]) -> None:
    services = config["services"]
    kafka = environment(services["kafka"])
    advertised = {
        listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    clients = {
        name: environment(svc)["VITALS_KAFKA_BOOTSTRAP"]
        for name, svc in services.items()
        if "VITALS_KAFKA_BOOTSTRAP" in environment(svc)
    }
    assert set(clients) >= {"worker", "simulator", "alerter"}
    for name, bootstrap in clients.items():
        assert bootstrap in advertised, name
        assert depends_on(services[name]).get("kafka") == "service_healthy", name
    assert str(kafka["KAFKA_PROCESS_ROLES"]) == "broker,controller"
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) == Settings.model_fields["partitions"].default
    for key in ("OFFSETS_TOPIC_REPLICATION_FACTOR", "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert int(kafka[f"KAFKA_{key}"]) == 1, key


@needs_compose
def test_devices_reach_kafka_only_through_the_gateway(config: dict[str, Any]) -> None:
    services = config["services"]
    assert not services["kafka"].get("ports"), "the broker is published: devices could bypass the gateway"
    kafka = environment(services["kafka"])
    assert "127.0.0.1" not in kafka["KAFKA_ADVERTISED_LISTENERS"]
    # What `vitalrisk gateway` reads from this environment is a valid configuration, listening
    # inside its container on the port published on the host's loopback and scraped by Prometheus.
    env = environment(services["gateway"])
    settings = Settings(**{key.removeprefix("VITALS_").lower(): value for key, value in env.items()
                           if key.startswith("VITALS_")})
    assert settings.gateway_host == "0.0.0.0"
    published = {str(port).split("/", 1)[0] for port in services["gateway"].get("ports") or []}
    assert published == {f"127.0.0.1:{settings.gateway_port}:{settings.gateway_port}"}
    assert depends_on(services["gateway"]) == {"kafka": "service_healthy", "timescaledb": "service_healthy",
                                               "migrate": "service_completed_successfully"}
    scrape = (ROOT / "grafana" / "prometheus" / "prometheus.yml").read_text()
    assert re.search(rf"- gateway\n\s+type: A\n\s+port: {settings.gateway_port}\n", scrape)


@needs_compose
def test_kafka_keeps_records_by_size_not_age(config: dict[str, Any]) -> None:
    assert kafka_retention_faults(config) == []
    assert int(environment(config["services"]["kafka"])["KAFKA_LOG_RETENTION_MS"]) == -1


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
def test_alerter_pages_the_pager(config: dict[str, Any]) -> None:
    assert receiver_faults(config) == []
    assert set(services_running(config, "alerter")) == {"alerter"}
    assert set(services_running(config, "pager")) == {"pager"}
    # What `vitalrisk alerter` reads from this environment is a valid configuration.
    env = environment(config["services"]["alerter"])
    settings = Settings(**{key.removeprefix("VITALS_").lower(): value for key, value in env.items()
                           if key.startswith("VITALS_")})
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
    environment:
      KAFKA_LOG_RETENTION_HOURS: 168
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
    assert len(kafka_retention_faults(cfg)) == 2
    # worker: loopback by default; alerter: loopback explicitly.
    assert sorted(f.split(":")[0] for f in metrics_host_faults(cfg)) == ["alerter", "worker"]
    # Signs with one variable, verifies with another.
    assert [f.split(":")[0] for f in shared_secret_faults(raw)] == ["pager"]
    # Unknown route receiver, a receiver that is no service, the wrong port, a loopback-only pager.
    faults = receiver_faults(cfg)
    assert len(faults) == 4, faults
    assert any("nobody" in f for f in faults) and any("oncall" in f for f in faults)
    assert any("port 8099" in f for f in faults) and any("listens on 127.0.0.1" in f for f in faults)
    assert shared_secret_faults({"services": {}}) and kafka_retention_faults({"services": {}})


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
