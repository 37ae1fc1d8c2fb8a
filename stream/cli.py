"""The ``vitalrisk`` command: one entry point, one subcommand per job.

Errors a user can fix end in one line on stderr starting ``vitalrisk: `` and never a traceback:
exit status 2 for a bad argument or setting, 1 for a service that is down, a port that is taken
or work that failed. The adapters raise :class:`~kernel.errors.VitalsError` subclasses where
the failure happens (each names its exit status); :func:`main` prints them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, get_args

from pydantic import SecretStr, ValidationError

from stream import deadletter_topic
from kernel.errors import EXIT_BAD_INPUT, ConfigurationError, ProcessDied, VitalsError
from kernel.limits import ID_PATTERN, valid_id
from kernel.settings import Settings, check_database_url
from gateway.app import run_gateway
from gateway.enrolment import read_tokens, run_devices
from infra.compose import COMPOSE_ACTIONS, run_compose_action
from infra.kafka_acls import ADMIN, PRINCIPALS
from infra.postgres import LocalPostgres
from infra.preflight import require_database
from infra.services import run_infra
from models.trainer_service import run_trainer
from simulators.export import run_export
from simulators.gateway_publisher import GatewayProducer, GatewaySender, tokens_for
from simulators.load import LoadCohort
from simulators.pager import run_pager
from simulators.replay import run_replay
from simulators.run import run_simulate
from sinks.migrations import SinkPolicies, migrate
from stream.alerts.commands import run_ack, run_silence, run_unsilence
from stream.alerts.service import run_alerter
from stream.demo import run_demo
from stream.evaluate import run_evaluate, run_protocol_evaluate
from stream.worker import run_worker

logger = logging.getLogger(__name__)


#: Settings whose values are never echoed in an error: they may hold a password.
_UNSHOWN_SETTINGS = frozenset({"database_url", "admin_database_url", "gateway_database_url"})


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line: ``vitalrisk: error: [command: ]...``."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vitalrisk").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_BAD_INPUT, f"vitalrisk: error: {where}{message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed_list(text: str) -> tuple[int, ...]:
    """``1,2,3`` -> ``(1, 2, 3)``; the protocol's checks (overlap, repeats) are :func:`stream.alert_tuning.check_seeds`."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds such as 1,2,3, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port (1-65535), got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port (1-65535), got {value}")
    return value


def _database_url(text: str) -> str:
    try:
        return check_database_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _id(text: str) -> str:
    if not valid_id(text):
        raise argparse.ArgumentTypeError(f"expected a pseudonymous id matching {ID_PATTERN}, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="vitalrisk", description="Streaming risk prediction for wearable vital signs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    infra = sub.add_parser("infra", help="start, stop, inspect or delete the local Kafka and PostgreSQL")
    infra.add_argument("action", choices=["start", "stop", "status", "clean", "check", "credentials", *COMPOSE_ACTIONS],
                       help="clean: stop and delete the service's data; check: connect with this process's "
                       "settings; credentials (kafka): print the VITALS_KAFKA_* variables of --principal; "
                       "compose-certs, compose-kafka: the Compose stack's CA and certificates, its broker's "
                       "configuration; acls: create the topics and the ACLs as admin on any broker (docs/compose.md)")
    infra.add_argument("service", nargs="?", choices=["kafka", "postgres", "all"], default="all")
    infra.add_argument("--secure", action="store_true",
                       help="start: a secured Kafka broker (SASL_SSL, SCRAM users, ACLs) when its storage is new; "
                            "PostgreSQL serving TLS only, with SCRAM passwords (throwaway CAs; docs/security-kafka.md, "
                            "docs/storage.md)")
    infra.add_argument("--principal", choices=[ADMIN, *PRINCIPALS], default=None,
                       help="credentials: the Kafka principal (service) whose variables to print")
    infra.add_argument("--brokers", type=int, choices=[1, 3], default=None,
                       help="start kafka: one node (the default) or a three-broker cluster (RF 3, min.insync 2) "
                            "when its storage is new (docs/scaling.md)")
    infra.add_argument("--node", type=int, choices=[1, 2, 3], default=None,
                       help="start or stop kafka: this node of the three-broker cluster alone")
    infra.add_argument("--out", type=Path, default=None, help="compose-certs, compose-kafka: the folder to write")
    infra.add_argument("--certs", type=Path, default=None, help="compose-kafka: the folder compose-certs wrote")
    infra.add_argument("--hosts", default=None,
                       help="compose-certs: host[:uid],... to certify, each key owned by uid (e.g. kafka:1000)")
    infra.add_argument("--owner", type=int, default=None, help="compose-kafka: the user id to give the files to")
    infra.add_argument("--renew", action="store_true", help="compose-certs: a new CA and certificates even if "
                       "they exist")

    migrate = sub.add_parser("migrate", help="apply database migrations (as the schema owner)")
    migrate.add_argument("--url", type=_database_url, help="owner URL; default VITALS_ADMIN_DATABASE_URL, or the local cluster's")

    sub.add_parser("worker", help="run a Faust worker: readings -> windows -> NEWS2 -> PostgreSQL")

    simulate = sub.add_parser("simulate", help="publish a simulated cohort's vitals to Kafka, or hold a load rate")
    simulate.add_argument("--patients", type=_positive_int, default=100)
    simulate.add_argument("--minutes", type=_positive_int, default=None,
                          help="simulated minutes to publish (default 60; with --rate: no limit)")
    simulate.add_argument("--seed", type=int, default=42)
    pace = simulate.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive_float, default=None,
                      help="simulated seconds per real second (default: as fast as possible)")
    pace.add_argument("--rate", type=_positive_float, default=None,
                      help="load generator: hold this many readings/s, timestamps current, until Ctrl-C")
    simulate.add_argument("--duration", type=_positive_float, default=None, metavar="SECONDS",
                          help="with --rate: stop after this many seconds")
    simulate.add_argument("--start-now", action="store_true",
                          help="start the simulated period at the current minute (with --speed 1: live data)")
    simulate.add_argument("--via-gateway", metavar="URL", default=None,
                          help="with --rate: every device uploads through the ingest gateway at URL instead of Kafka")
    simulate.add_argument("--tokens", metavar="FILE", type=Path, default=None,
                          help="with --via-gateway: the devices' tokens (`vitalrisk devices enroll --cohort N --out FILE`)")

    sub.add_parser("trainer", help="learn from feature rows and outcomes; publish signed model snapshots")
    sub.add_parser("alerter", help="consume risk scores, run the alert engine, page through signed webhooks")
    ack = sub.add_parser("ack", help="acknowledge a firing alert (recorded with who and when)")
    ack.add_argument("alert_id")
    ack.add_argument("--by", required=True, help="who acknowledges (staff id)")
    silence = sub.add_parser("silence", help="silence pages for a patient (or, briefly, every patient) and/or kind")
    scope = silence.add_mutually_exclusive_group(required=True)
    scope.add_argument("--patient", default=None, help="pseudonymous patient id")
    scope.add_argument("--all-patients", action="store_true",
                       help="every patient: at most VITALS_SILENCE_WILDCARD_MAX_MINUTES (60) minutes")
    silence.add_argument("--kind", default=None, help="kind or prefix, e.g. risk_high (default: all)")
    silence.add_argument("--minutes", type=_positive_float, required=True,
                         help="how long; one patient at most VITALS_SILENCE_MAX_MINUTES (10080)")
    silence.add_argument("--by", required=True, help="who silences (staff id)")
    silence.add_argument("--reason", required=True, help="short reason code; no patient details")
    unsilence = sub.add_parser("unsilence", help="end a silence now (recorded with who and when)")
    unsilence.add_argument("silence_id")
    unsilence.add_argument("--by", required=True, help="who ends it (staff id)")
    pager = sub.add_parser("pager", help="stand-in paging system: verify, deduplicate, record webhooks")
    pager.add_argument("--port", type=_port, default=9095)
    pager.add_argument("--host", default="127.0.0.1")
    pager.add_argument("--secret-env", default=None,
                       help="variable holding the signing secret (default VITALS_WEBHOOK_SECRET)")
    pager.add_argument("--record", type=Path, default=None, help="append accepted webhooks to this JSONL file")
    pager.add_argument("--grafana-token-env", default=None, help="variable holding Grafana's bearer token")

    evaluate = sub.add_parser("evaluate", help="simulator -> core -> models in one process; quality, fairness, burden")
    evaluate.add_argument("--patients", type=_positive_int, default=1000)
    evaluate.add_argument("--days", type=_positive_float, default=14.0)
    evaluate.add_argument("--seed", type=int, default=None, help="the one cohort's seed (default 42)")
    evaluate.add_argument("--tune-seeds", type=_seed_list, default=None, metavar="S,S,...",
                          help="cohorts the alert policy is chosen on (with --test-seeds; no plots)")
    evaluate.add_argument("--test-seeds", type=_seed_list, default=None, metavar="S,S,...",
                          help="cohorts the chosen policy is reported on, never tuned on")
    evaluate.add_argument("--jobs", type=_positive_int, default=None,
                          help="cohorts run at once with --tune-seeds (default: one per core)")
    evaluate.add_argument("--store", action="store_true",
                          help="record the alert burden by subgroup in the database, for the Model board")
    evaluate.add_argument("--model", choices=["logreg", "hat"], default="logreg",
                          help="logreg (default) or hat (Hoeffding adaptive tree)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    evaluate.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNG plots")

    demo = sub.add_parser("demo", help="start everything, stream a cohort, print a summary, stop")
    demo.add_argument("--patients", type=_positive_int, default=200)
    demo.add_argument("--minutes", type=_positive_int, default=60, help="simulated minutes")
    demo.add_argument("--seed", type=int, default=42)

    export = sub.add_parser("export", help="write a simulated cohort's readings, episodes and patients to files")
    export.add_argument("--patients", type=_positive_int, default=100)
    export.add_argument("--days", type=_positive_float, default=1.0, help="simulated days")
    export.add_argument("--seed", type=int, default=42)
    export.add_argument("--out", type=Path, required=True, help="folder for the files (created if missing)")
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet")

    replay = sub.add_parser("replay", help="publish a recorded timestamp,metric,value CSV as one patient's device")
    replay.add_argument("csv", type=Path, help="CSV with a header timestamp,metric,value")
    replay.add_argument("--patient", required=True, help="pseudonymous patient id (never a name)")
    replay.add_argument("--device", default=None, help="pseudonymous device id (default: derived from --patient)")
    replay.add_argument("--speed", type=_positive_float, default=None,
                        help="recorded seconds per real second (default: as fast as possible)")
    replay.add_argument("--shift-to-now", action="store_true", help="move the recording so that it starts now")
    replay.add_argument("--batch-seconds", type=_positive_float, default=60.0,
                        help="seconds of readings per device message (default 60)")
    replay.add_argument("--via-gateway", metavar="URL", default=None,
                        help="upload through the ingest gateway at URL (e.g. http://127.0.0.1:8088) instead of Kafka")
    token = replay.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, help="with --via-gateway: the device's token")
    token.add_argument("--token-env", metavar="VAR", default=None,
                       help="with --via-gateway: the variable holding the device's token (kept out of ps)")
    deadletter_topic.add_parser(sub)

    sub.add_parser("gateway", help="HTTP ingest gateway: authenticated device uploads (native, FHIR, Open mHealth) "
                                   "-> Kafka, 202 after the broker's ack")
    devices = sub.add_parser("devices", help="enrol, list or revoke the device credentials the gateway accepts")
    owner_url = _OneLineParser(add_help=False)
    owner_url.add_argument("--url", type=_database_url,
                           help="schema owner's URL; default VITALS_ADMIN_DATABASE_URL, or the local cluster's")
    actions = devices.add_subparsers(dest="action", required=True, parser_class=_OneLineParser)
    enroll = actions.add_parser("enroll", parents=[owner_url],
                                help="bind a device to a patient; prints its token once (alone on stdout)")
    whom = enroll.add_mutually_exclusive_group(required=True)
    whom.add_argument("--patient", type=_id, help="pseudonymous patient id (never a name)")
    whom.add_argument("--cohort", type=_positive_int, metavar="N",
                      help="every device of the load generator's N-patient cohort (`simulate --patients N --rate R`); "
                           "needs --out")
    enroll.add_argument("--device", type=_id, default=None,
                        help="with --patient: pseudonymous device id (default: a new dev-...)")
    enroll.add_argument("--seed", type=int, default=None, help="with --cohort: the cohort's seed (default 42)")
    enroll.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="write the token(s) to this new file (mode 0600, one JSON object a line) "
                             "instead of stdout")
    listing = actions.add_parser("list", parents=[owner_url], help="list device credentials (never the tokens)")
    listing.add_argument("--patient", type=_id, default=None, help="only this patient's devices")
    listing.add_argument("--all", action="store_true", help="include revoked credentials")
    revoke = actions.add_parser("revoke", parents=[owner_url], help="revoke a device's credential at once")
    revoke.add_argument("device", type=_id, help="the device id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"vitalrisk: {bad_settings_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _dispatch(args, settings)
    except VitalsError as exc:
        print(f"vitalrisk: {one_line(exc)}", file=sys.stderr)
        if isinstance(exc, ProcessDied) and exc.excerpt:
            print(exc.excerpt, file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("vitalrisk: interrupted", file=sys.stderr)
        return 130


def bad_settings_line(exc: ValidationError) -> str:
    """One line naming the first bad ``VITALS_*`` variable, its rule and value, and how many more.

    Examples
    --------
    >>> try:
    ...     Settings(partitions="abc", model="tree")
    ... except ValidationError as exc:
    ...     print(bad_settings_line(exc))
    bad setting VITALS_PARTITIONS='abc': Input should be a valid integer, unable to parse string as an integer (and 1 more: VITALS_MODEL)
    """
    errors = exc.errors(include_url=False)
    names = [str(error["loc"][0]) if error["loc"] else "" for error in errors]
    first, name = errors[0], names[0]
    if not name:  # a rule across settings (or an unknown variable): the rule names them, no value shown
        return "bad settings: " + str(first["msg"]).removeprefix("Value error, ")
    field = Settings.model_fields.get(name)
    secret = name in _UNSHOWN_SETTINGS or (field is not None and SecretStr in (field.annotation,
                                                                                *get_args(field.annotation)))
    shown = "" if secret or first.get("input") is None else f"={first['input']!r}"
    rule = str(first["msg"]).removeprefix("Value error, ")
    line = f"bad setting VITALS_{name.upper()}{shown}: {rule}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more: {', '.join(f'VITALS_{n.upper()}' for n in names[1:])})"
    return line


def one_line(exc: VitalsError) -> str:
    """``exc``'s message as one line: a message that spans lines (a service's log tail) is cut
    to its first, and the rest is logged at debug level (``vitalrisk -v`` shows it)."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if len(lines) == 1:
        return lines[0]
    logger.debug("%s", "\n".join(lines[1:]))
    return f"{lines[0].rstrip(':; ')} (run with -v for details)"


def _gateway_producer(args: argparse.Namespace, settings: Settings) -> GatewayProducer:
    """The uploader for ``--via-gateway``; paced replays send each message as its time comes."""
    token = os.environ.get(args.token_env) if args.token_env else args.token
    if not token:
        raise ConfigurationError("--via-gateway needs the device's token: --token TOKEN or --token-env VAR"
                                 + (f" ({args.token_env} is not set)" if args.token_env else ""))
    return GatewayProducer(args.via_gateway, token, batch_messages=1 if args.speed else 500,
                           ca_file=settings.gateway_ca_file)


def _load_sender(args: argparse.Namespace, settings: Settings) -> GatewaySender:
    """The load generator's uploader for ``simulate --rate R --via-gateway URL --tokens FILE``."""
    if args.rate is None:
        raise ConfigurationError("--via-gateway needs --rate: the load generator sends through the gateway (a cohort "
                                 "run publishes outcomes and patients too, which only Kafka takes)")
    if args.tokens is None:
        raise ConfigurationError("--via-gateway needs --tokens FILE, the devices' tokens: "
                                 f"`vitalrisk devices enroll --cohort {args.patients} --seed {args.seed} --out FILE`")
    devices = LoadCohort(args.patients, seed=args.seed).devices
    return GatewaySender(args.via_gateway, tokens_for(devices, read_tokens(args.tokens), source=str(args.tokens)),
                         ca_file=settings.gateway_ca_file)


def _enrolled_cohort(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """``(device_id, patient_id)`` of ``devices enroll --cohort N [--seed S]``; ``None`` for ``--patient``."""
    if args.cohort is None:
        if args.seed is not None:
            raise ConfigurationError("--seed goes with --cohort N")
        return None
    if args.device is not None:
        raise ConfigurationError("--device goes with --patient: a cohort's device ids are the load generator's")
    if args.out is None:
        raise ConfigurationError("--cohort needs --out FILE: the tokens go to a file (mode 0600), never to the terminal")
    seed = 42 if args.seed is None else args.seed
    if seed < 0:
        raise ConfigurationError(f"--seed must be a non-negative integer, got {seed}")
    return LoadCohort(args.cohort, seed=seed).devices


def _owner_url(given: str | None, settings: Settings) -> str:
    """The schema owner's URL (``--url``, ``VITALS_ADMIN_DATABASE_URL`` or the local cluster's), checked to answer."""
    if given:
        url, setting = given, "--url"
    elif settings.admin_database_url:
        url, setting = settings.admin_database_url, "VITALS_ADMIN_DATABASE_URL"
    else:
        try:
            url = LocalPostgres(settings).superuser_url
        except ValueError as exc:  # VITALS_DATABASE_URL names a server that is not the local cluster
            raise ConfigurationError(f"{exc}: give the schema owner's URL with --url or "
                                     "VITALS_ADMIN_DATABASE_URL") from None
        setting = "VITALS_DATABASE_URL (the local cluster's port)"
    require_database(url, setting=setting)
    return url


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "infra" and args.action in COMPOSE_ACTIONS:
        return run_compose_action(settings, args.action, out=args.out, certs=args.certs, hosts=args.hosts,
                                  renew=args.renew, owner=args.owner, environ=os.environ)
    if args.command == "infra":
        return run_infra(settings, args.action, args.service, secure=args.secure, principal=args.principal,
                         brokers=args.brokers, node=args.node)
    if args.command == "migrate":
        url = _owner_url(args.url, settings)
        applied = migrate(url, policies=SinkPolicies.from_settings(settings), timescale=settings.sink_timescale)
        print(f"applied migrations: {applied}" if applied else "database schema is up to date")
        return 0
    if args.command == "worker":
        return run_worker(settings)
    if args.command == "simulate":
        if args.start_now and (args.speed is None or args.speed > 1):
            # Kafka refuses records stamped more than an hour ahead of its clock.
            print("vitalrisk: error: --start-now needs --speed 1 or lower: faster, the readings would be "
                  "stamped in the future (see --help)", file=sys.stderr)
            return 2
        if args.duration is not None and args.rate is None:
            print("vitalrisk: error: --duration needs --rate (see --help)", file=sys.stderr)
            return 2
        if args.rate == float("inf"):
            print("vitalrisk: error: --rate must be a finite number of readings/s", file=sys.stderr)
            return 2
        if args.seed < 0:
            print(f"vitalrisk: error: --seed must be a non-negative integer, got {args.seed}", file=sys.stderr)
            return 2
        if args.via_gateway is None:
            if args.tokens is not None:
                raise ConfigurationError("--tokens goes with --via-gateway URL")
            return run_simulate(settings, patients=args.patients, minutes=args.minutes, seed=args.seed,
                                speed=args.speed, rate=args.rate, duration_s=args.duration, start_now=args.start_now)
        with _load_sender(args, settings) as sender:
            return run_simulate(settings, patients=args.patients, minutes=args.minutes, seed=args.seed,
                                speed=args.speed, rate=args.rate, duration_s=args.duration, sender=sender)
    if args.command == "trainer":
        return run_trainer(settings)
    if args.command == "alerter":
        return run_alerter(settings)
    if args.command == "ack":
        return run_ack(settings, args.alert_id, by=args.by)
    if args.command == "unsilence":
        return run_unsilence(settings, args.silence_id, by=args.by)
    if args.command == "silence":
        return run_silence(settings, patient_id=args.patient, all_patients=args.all_patients, kind=args.kind,
                           minutes=args.minutes,
                           by=args.by, reason=args.reason)
    if args.command == "pager":
        return run_pager(settings, args.port, host=args.host, secret_env=args.secret_env,
                         record_path=args.record, grafana_token_env=args.grafana_token_env)
    if args.command == "evaluate":
        if args.tune_seeds is not None or args.test_seeds is not None:
            if args.seed is not None:
                raise ConfigurationError("evaluate takes --seed or --tune-seeds/--test-seeds, not both")
            return run_protocol_evaluate(settings, args.patients, args.days, args.tune_seeds or (),
                                         args.test_seeds or (), args.model, args.json, jobs=args.jobs,
                                         store=args.store)
        return run_evaluate(settings, args.patients, args.days, 42 if args.seed is None else args.seed, args.model,
                            args.json, args.out, store=args.store)
    if args.command == "demo":
        return run_demo(settings, patients=args.patients, minutes=args.minutes, seed=args.seed)
    if args.command == "export":
        return run_export(patients=args.patients, days=args.days, seed=args.seed, out=args.out, fmt=args.format)
    if args.command == "replay":
        producer = _gateway_producer(args, settings) if args.via_gateway else None
        if producer is None and (args.token or args.token_env):
            raise ConfigurationError("--token and --token-env go with --via-gateway URL")
        return run_replay(settings, args.csv, patient_id=args.patient, device_id=args.device, speed=args.speed,
                          shift_to_now=args.shift_to_now, batch_s=args.batch_seconds, producer=producer)
    if args.command == "deadletters":
        return deadletter_topic.run(settings, args)
    if args.command == "gateway":
        return run_gateway(settings)
    if args.command == "devices":
        cohort = _enrolled_cohort(args) if args.action == "enroll" else None
        return run_devices(settings, args.action, url=_owner_url(args.url, settings),
                           patient=getattr(args, "patient", None), device=getattr(args, "device", None),
                           include_revoked=getattr(args, "all", False), cohort=cohort,
                           tokens_path=getattr(args, "out", None))
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse restricts the choices


if __name__ == "__main__":
    sys.exit(main())
