"""``vitalrisk deadletters``: list, summarise and replay the dead-letter topic.

The topic is read whole, from the beginning to its end offsets when the command starts, with
no consumer group (nothing is committed, nothing is taken from the workers). Records are those
of :mod:`stream.deadletters`.

``replay`` sends chosen dead letters back to the topic they came from, with their own key and
bytes, once the cause is fixed (a limit raised, a device's clock or firmware mended). It only
sends what cannot duplicate anything: records refused whole (none of their readings was
accepted), read from a topic (not quarantined database rows), not replayed before; it then marks
each one replayed on the dead-letter topic. A replayed device message is de-duplicated by the
worker like any resend, and the database writes are idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from infra.preflight import require_kafka
from kernel.errors import VitalsError
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings
from stream.deadletters import DeadLetterRecord, iso, replayed_headers, summarise

#: How long to wait for the broker before saying it is down, milliseconds.
TIMEOUT_MS = 10_000


class DeadLettersUnavailable(VitalsError):
    """The broker could not be reached or the dead-letter topic read."""


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """The ``deadletters`` subcommand and its options."""
    parser = sub.add_parser("deadletters", help="list, summarise or replay the dead-letter topic")
    parser.add_argument("action", choices=["list", "summary", "replay"])
    parser.add_argument("--reason", action="append", help="only this reason (repeatable)")
    parser.add_argument("--device", help="only this device id")
    parser.add_argument("--patient", help="only this patient id")
    parser.add_argument("--since", type=_when, help="only dead letters at or after this ISO-8601 time (UTC)")
    parser.add_argument("--until", type=_when, help="only dead letters before this ISO-8601 time (UTC)")
    parser.add_argument("--by", choices=["reason", "device", "patient", "hour"], default="reason",
                        help="summary: group by this (default reason)")
    parser.add_argument("--limit", type=int, default=100, help="list: at most this many, newest last (default 100)")
    parser.add_argument("--json", action="store_true", help="JSON lines (list) or a JSON object (summary)")
    parser.add_argument("--dry-run", action="store_true", help="replay: say what would be sent, send nothing")


def _when(text: str) -> int:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def chosen(records: Iterable[DeadLetterRecord], args: argparse.Namespace) -> list[DeadLetterRecord]:
    """The dead letters (not replay markers) that pass the filters of ``args``."""
    return [r for r in records if r.replayed is None
            and (not args.reason or r.reason in args.reason or set(r.counts) & set(args.reason))
            and (args.device is None or r.device_id == args.device)
            and (args.patient is None or r.patient_id == args.patient)
            and (args.since is None or r.timestamp_ms >= args.since)
            and (args.until is None or r.timestamp_ms < args.until)]


def read_all(settings: Settings) -> list[DeadLetterRecord]:
    """Every record of the dead-letter topic up to its current end, in partition and offset order."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                 enable_auto_commit=False, request_timeout_ms=TIMEOUT_MS + 1,
                                 client_id="vitalrisk-deadletters", **kafka_python_options(settings))
    except KafkaError as exc:
        raise DeadLettersUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    try:
        partitions = consumer.partitions_for_topic(settings.deadletter_topic) or set()
        tps = [TopicPartition(settings.deadletter_topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[DeadLetterRecord] = []
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = consumer.poll(timeout_ms=TIMEOUT_MS)
            if not batch:
                raise DeadLettersUnavailable(f"no records from {settings.deadletter_topic} in "
                                             f"{TIMEOUT_MS / 1000:.0f} s before its end")
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        records.append(DeadLetterRecord.from_kafka(m.partition, m.offset, m.timestamp, m.key,
                                                                   m.value, m.headers))
                if consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    except KafkaError as exc:
        raise DeadLettersUnavailable(f"cannot read {settings.deadletter_topic}: {exc}") from None
    finally:
        consumer.close()


def replay(settings: Settings, records: list[DeadLetterRecord], every: list[DeadLetterRecord], *,
           dry_run: bool, out: TextIO) -> tuple[int, int]:
    """Send the replayable ``records`` back to their source topics and mark them; ``(sent, skipped)``."""
    done = {r.replayed for r in every if r.replayed is not None}
    todo = [r for r in records if r.replayable and (r.partition, r.offset) not in done]
    skipped = len(records) - len(todo)
    if dry_run or not todo:
        for r in todo:
            out.write(f"would replay {r.partition}/{r.offset} ({r.reason}) to {r.source[0] if r.source else '?'}\n")
        return 0 if dry_run else len(todo), skipped
    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                 request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS,
                                 client_id="vitalrisk-deadletters", **kafka_python_options(settings))
    except KafkaError as exc:
        raise DeadLettersUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    try:
        for r in todo:
            if r.source is None:  # never: replayable says so
                continue
            producer.send(r.source[0], key=r.key, value=r.value,
                          headers=[("vitalrisk.replay_of", f"{r.partition}/{r.offset}".encode())]).get(TIMEOUT_MS)
            producer.send(settings.deadletter_topic, key=r.key, value=None,
                          headers=replayed_headers(r.partition, r.offset)).get(TIMEOUT_MS)
    except KafkaError as exc:
        raise DeadLettersUnavailable(f"replay stopped: {exc}") from None
    finally:
        producer.close()
    return len(todo), skipped


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Carry out ``vitalrisk deadletters ACTION``; the exit status."""
    require_kafka(settings)  # one line at once, not kafka-python's 30 s of retries
    every = read_all(settings)
    records = chosen(every, args)
    if args.action == "list":
        shown = records[-args.limit:] if args.limit > 0 else records
        for r in shown:
            if args.json:
                out.write(json.dumps(r.as_json()) + "\n")
            else:
                source = "-" if r.source is None else "/".join(map(str, r.source))
                out.write(f"{r.partition}/{r.offset}  {iso(r.timestamp_ms)}  {r.reason:<18} {source:<28} "
                          f"{r.device_id or '-':<16} {r.patient_id or '-':<16} {r.detail[:80]}\n")
        if not args.json:
            out.write(f"{len(shown)} of {len(records)} dead letters\n")
        return 0
    if args.action == "summary":
        rows = summarise(records, args.by)
        if args.json:
            out.write(json.dumps({"by": args.by, "dead_letters": len(records),
                                  "groups": [{"group": g, "dead_letters": n, "refused": k} for g, n, k in rows]})
                      + "\n")
        else:
            out.write(f"{args.by:<24} {'dead letters':>12} {'refused':>10}\n")
            for group, letters, refused in rows:
                out.write(f"{group:<24} {letters:>12} {refused:>10}\n")
            out.write(f"{'total':<24} {len(records):>12}\n")
        return 0
    sent, skipped = replay(settings, records, every, dry_run=args.dry_run, out=out)
    out.write(f"replayed {sent}, skipped {skipped} (partly accepted, quarantined rows or already replayed)\n")
    return 0

