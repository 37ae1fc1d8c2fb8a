"""``python -m stream.alerts {alerter,pager,ack,silence}``: the alerting entry points before (and
besides) their ``vitalrisk`` subcommands; the tests and the benchmark start processes with it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from stream.errors import VitalsError
from stream.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stream.alerts")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("alerter", help="consume risk.scores, run the alert engine, page through signed webhooks")
    pager = sub.add_parser("pager", help="a stand-in paging system that verifies and records webhooks")
    pager.add_argument("--port", type=int, required=True)
    pager.add_argument("--host", default="127.0.0.1")
    pager.add_argument("--secret-env", default=None, help="variable holding the secret (default VITALS_WEBHOOK_SECRET)")
    pager.add_argument("--record", type=Path, default=None, help="append accepted webhooks to this JSONL file")
    pager.add_argument("--grafana-token-env", default=None)
    ack = sub.add_parser("ack", help="acknowledge a firing alert")
    ack.add_argument("alert_id")
    ack.add_argument("--by", required=True)
    silence = sub.add_parser("silence", help="silence pages for a while")
    silence.add_argument("--patient", default=None)
    silence.add_argument("--kind", default=None)
    silence.add_argument("--minutes", type=float, required=True)
    silence.add_argument("--by", required=True)
    silence.add_argument("--reason", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"vitalrisk: bad setting VITALS_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        if args.command == "alerter":
            from stream.alerts.service import run_alerter

            return run_alerter(settings)
        if args.command == "pager":
            from simulators.pager import run_pager

            return run_pager(settings, args.port, host=args.host, secret_env=args.secret_env,
                             record_path=args.record, grafana_token_env=args.grafana_token_env)
        if args.command == "ack":
            from stream.alerts.commands import run_ack

            return run_ack(settings, args.alert_id, by=args.by)
        from stream.alerts.commands import run_silence

        return run_silence(settings, patient_id=args.patient, kind=args.kind, minutes=args.minutes, by=args.by,
                           reason=args.reason)
    except VitalsError as exc:
        print(f"vitalrisk: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
