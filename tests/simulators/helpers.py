"""Test helpers for the simulators: a strict wire validator and stream summaries.

The validator is deliberately independent of the simulator's own code: it checks the wire
format from the specification (ARCHITECTURE.md and the task brief) against
``kernel.vocabulary.METRICS`` only.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from typing import Any
from collections.abc import Iterable

from simulators.cohort import CohortConfig, SimulatedMessage, simulate
from kernel.vocabulary import METRICS

DEVICE_KEYS = {"schema", "device_id", "patient_id", "seq", "sent_at", "readings"}
READING_KEYS = {"metric", "t", "value", "unit"}
OUTCOME_KEYS = {"schema", "patient_id", "t", "kind", "onset"}
OUTCOME_KINDS = {"hf_decompensation", "copd_exacerbation", "infection", "af_episode"}
PATIENT_ID = re.compile(r"^pt-[0-9a-f]{10}$")
DEVICE_ID = re.compile(r"^dev-[0-9a-f]{12}$")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def device_message_problems(payload: Any) -> list[str]:
    """Everything wrong with a decoded device message; empty when it is valid."""
    if not isinstance(payload, dict):
        return [f"not an object: {type(payload).__name__}"]
    problems: list[str] = []
    if set(payload) != DEVICE_KEYS:
        return [f"keys {sorted(payload)}"]
    if payload["schema"] != "vitalrisk.device/1":
        problems.append(f"schema {payload['schema']!r}")
    if not isinstance(payload["device_id"], str) or not DEVICE_ID.match(payload["device_id"]):
        problems.append(f"device_id {payload['device_id']!r}")
    if not isinstance(payload["patient_id"], str) or not PATIENT_ID.match(payload["patient_id"]):
        problems.append(f"patient_id {payload['patient_id']!r}")
    if not _is_int(payload["seq"]) or payload["seq"] < 0:
        problems.append(f"seq {payload['seq']!r}")
    if not _is_int(payload["sent_at"]):
        problems.append(f"sent_at {payload['sent_at']!r}")
    readings = payload["readings"]
    if not isinstance(readings, list) or not readings:
        return problems + ["readings empty or not a list"]
    for r in readings:
        if not isinstance(r, dict) or set(r) != READING_KEYS:
            problems.append(f"reading {r!r}")
            continue
        metric = METRICS.get(r["metric"]) if isinstance(r["metric"], str) else None
        if metric is None:
            problems.append(f"metric {r['metric']!r}")
            continue
        if r["unit"] != metric.unit:
            problems.append(f"unit {r['unit']!r} for {metric.name}")
        if not _is_int(r["t"]):
            problems.append(f"t {r['t']!r}")
        value = r["value"]
        if not isinstance(value, float) or not math.isfinite(value) or not metric.accepts(value):
            problems.append(f"value {value!r} for {metric.name}")
    return problems


def raw_is_valid(raw: bytes) -> bool:
    """Whether raw bytes decode to a valid device message."""
    try:
        decoded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return not device_message_problems(decoded)


def outcome_problems(payload: Any) -> list[str]:
    """Everything wrong with an outcome event; empty when it is valid."""
    if not isinstance(payload, dict) or set(payload) != OUTCOME_KEYS:
        return [f"outcome {payload!r}"]
    problems = []
    if payload["schema"] != "vitalrisk.outcome/1":
        problems.append(f"schema {payload['schema']!r}")
    if not PATIENT_ID.match(payload["patient_id"]):
        problems.append(f"patient_id {payload['patient_id']!r}")
    if payload["kind"] not in OUTCOME_KINDS:
        problems.append(f"kind {payload['kind']!r}")
    if not (_is_int(payload["t"]) and payload["t"] == payload["onset"]):
        problems.append(f"t {payload['t']!r} / onset {payload['onset']!r}")
    return problems


def run(config: CohortConfig) -> list[SimulatedMessage]:
    """The whole stream of ``config`` as a list."""
    return list(simulate(config))


def device_messages(messages: Iterable[SimulatedMessage]) -> list[dict[str, Any]]:
    """The valid (dict) device messages of a stream."""
    return [m.payload for m in messages if m.kind == "reading" and isinstance(m.payload, dict)]


def readings_by(
    messages: Iterable[SimulatedMessage], metric: str
) -> dict[str, list[tuple[int, float]]]:
    """patient_id -> [(t, value)] of one metric, in stream order."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for payload in device_messages(messages):
        for r in payload["readings"]:
            if r["metric"] == metric:
                out[payload["patient_id"]].append((r["t"], r["value"]))
    return out


def within(observed: float, expected: float, p: float, sds: float = 5.0) -> bool:
    """Whether a binomial/Poisson count ``observed`` is within ``sds`` standard deviations
    of ``expected`` (``p`` the per-trial probability; 0 for Poisson)."""
    sd = math.sqrt(max(expected * (1.0 - p), 1.0))
    return abs(observed - expected) <= sds * sd
