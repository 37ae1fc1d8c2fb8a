"""Rows of the sink's tables, from events: pure functions, no database.

Each function turns events into tuples in the column order of one table, as the writer copies
them (:mod:`sinks.timescale`; the columns are its ``FEATURES``, ``RISK_SCORES`` and ``READINGS``
targets) or inserts them (``ops_events``). Times become aware UTC datetimes, exactly
(:func:`utc`); rows are grouped by patient, which makes the primary keys' inserts nearly
sequential.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from kernel.events import OpsEvent, RiskScore, VitalReading, WindowFeatures

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATIENT = attrgetter("patient_id")


def utc(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime, exactly (integer arithmetic).

    >>> utc(1_767_571_200_001).isoformat()
    '2026-01-05T00:00:00.001000+00:00'
    """
    return _EPOCH + timedelta(milliseconds=ms)


def feature_rows(windows: Sequence[WindowFeatures]) -> list[tuple[object, ...]]:
    """Flatten windows to one ``features`` row per patient, metric and window, grouped by patient.

    Grouping a batch by patient (a stable sort: each patient's windows stay in event-time order)
    turns the primary key's B-tree inserts from scattered into nearly sequential, about 1.6x the
    rows per second (see bench/bench_sink.py).

    >>> from kernel.events import MetricStats
    >>> row, = feature_rows([WindowFeatures(patient_id="pt-1", start_ms=0, end_ms=60_000, metrics={"heart_rate": MetricStats(2, 71.0, 70.0, 72.0)})])
    >>> row[:2], row[3].isoformat(), row[4:]
    (('pt-1', 'heart_rate'), '1970-01-01T00:01:00+00:00', (2, 71.0, 70.0, 72.0))
    """
    rows: list[tuple[object, ...]] = []
    times: dict[int, datetime] = {}  # a batch's windows share a few boundaries
    for w in sorted(windows, key=_PATIENT):
        start = times.get(w.start_ms) or times.setdefault(w.start_ms, utc(w.start_ms))
        end = times.get(w.end_ms) or times.setdefault(w.end_ms, utc(w.end_ms))
        rows.extend((w.patient_id, metric, start, end, s.count, s.mean, s.min, s.max)
                    for metric, s in w.metrics.items())
    return rows


def score_rows(scores: Sequence[RiskScore]) -> list[tuple[object, ...]]:
    """One ``risk_scores`` row per score, grouped by patient; ``inputs`` and ``contributions`` stay
    dicts (dumped as jsonb)."""
    scores = sorted(scores, key=_PATIENT)
    times: dict[int, datetime] = {}
    for s in scores:
        for ms in (s.window_start_ms, s.window_end_ms):
            if ms not in times:
                times[ms] = utc(ms)
    return [(s.patient_id, times[s.window_start_ms], times[s.window_end_ms], s.model_name, s.model_version, s.score,
             s.news2_total, s.news2_band, s.inputs, s.contributions, list(s.missing_inputs))
            for s in scores]


def reading_rows(readings: Iterable[VitalReading], every_ms: int) -> list[tuple[object, ...]]:
    """The first reading per patient, metric and ``every_ms`` bucket (``0`` keeps them all).

    >>> rs = [VitalReading(patient_id="pt-1", device_id="d", seq=1, metric="heart_rate", ts_ms=t, value=70.0) for t in (0, 4_000, 9_999, 10_000)]
    >>> [row[2].second for row in reading_rows(rs, 10_000)]
    [0, 10]
    >>> len(reading_rows(rs, 0))
    4
    """
    if every_ms < 0:
        raise ValueError(f"every_ms must be >= 0, got {every_ms}")
    rows: list[tuple[object, ...]] = []
    seen: set[tuple[str, str, int]] = set()
    for r in sorted(readings, key=_PATIENT):
        if every_ms:
            key = (r.patient_id, r.metric, r.ts_ms // every_ms)
            if key in seen:
                continue
            seen.add(key)
        rows.append((r.patient_id, r.metric, utc(r.ts_ms), r.value, r.device_id))
    return rows


def ops_event_row(event: OpsEvent) -> tuple[int, str, str, str]:
    """One ``ops_events`` row: epoch ms, kind, subject and the details as JSON text.

    Numbers that are not Python floats (numpy's) are written as floats.

    >>> ops_event_row(OpsEvent(kind="drift", ts_ms=5, subject="risk-logreg", details={"loss": 0.25}))
    (5, 'drift', 'risk-logreg', '{"loss": 0.25}')
    """
    return event.ts_ms, event.kind, event.subject, json.dumps(event.details, default=float)
