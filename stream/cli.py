"""The ``vitalrisk`` command: one entry point, one subcommand per job.

Errors a user can fix (a bad argument, a service that is down) end in one line on stderr and
exit status 2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

from stream.errors import VitalsError
from stream.settings import Settings

logger = logging.getLogger(__name__)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line: ``vitalrisk: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="vitalrisk", description="Streaming risk prediction for wearable vital signs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    infra = sub.add_parser("infra", help="start, stop or inspect the local Kafka and PostgreSQL")
    infra.add_argument("action", choices=["start", "stop", "status"])
    infra.add_argument("service", nargs="?", choices=["kafka", "postgres", "all"], default="all")

    migrate = sub.add_parser("migrate", help="apply database migrations (as the schema owner)")
    migrate.add_argument("--url", help="owner URL; default VITALS_ADMIN_DATABASE_URL, or the local cluster's")

    sub.add_parser("worker", help="run a Faust worker: readings -> windows -> NEWS2 -> PostgreSQL")

    simulate = sub.add_parser("simulate", help="publish a simulated cohort's vitals to Kafka")
    simulate.add_argument("--patients", type=_positive_int, default=100)
    simulate.add_argument("--minutes", type=_positive_int, default=60, help="simulated minutes to publish")
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--speed", type=_positive_float, default=None,
                          help="simulated seconds per real second (default: as fast as possible)")

    demo = sub.add_parser("demo", help="start everything, stream a cohort, print a summary, stop")
    demo.add_argument("--patients", type=_positive_int, default=200)
    demo.add_argument("--minutes", type=_positive_int, default=60, help="simulated minutes")
    demo.add_argument("--seed", type=int, default=42)
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
        first = exc.errors()[0]
        print(f"vitalrisk: bad setting VITALS_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args, settings)
    except VitalsError as exc:
        print(f"vitalrisk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vitalrisk: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "infra":
        from infra.services import run_infra

        return run_infra(settings, args.action, args.service)
    if args.command == "migrate":
        from infra.postgres import LocalPostgres
        from sinks.migrations import migrate

        url = args.url or settings.admin_database_url or LocalPostgres(settings).superuser_url
        applied = migrate(url)
        print(f"applied migrations: {applied}" if applied else "database schema is up to date")
        return 0
    if args.command == "worker":
        from stream.worker import run_worker

        return run_worker(settings)
    if args.command == "simulate":
        from simulators.run import run_simulate

        return run_simulate(settings, patients=args.patients, minutes=args.minutes, seed=args.seed,
                            speed=args.speed)
    if args.command == "demo":
        from stream.demo import run_demo

        return run_demo(settings, patients=args.patients, minutes=args.minutes, seed=args.seed)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse restricts the choices


if __name__ == "__main__":
    sys.exit(main())
