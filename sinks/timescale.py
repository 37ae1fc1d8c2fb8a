"""Idempotent batched writes of features and scores to PostgreSQL / TimescaleDB.

Each batch is COPYed into session-local staging tables, then moved with
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, all in one transaction: a replayed batch
adds no rows, and a failed one adds none either. Transient failures are retried with
exponential backoff for as long as ``retry_for_s`` allows; meanwhile the caller, awaiting the
write, stops consuming — the backpressure that keeps Kafka offsets behind the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from types import TracebackType

import psycopg

from sinks.errors import SinkUnavailable
from stream.events import RiskScore, WindowFeatures

logger = logging.getLogger(__name__)

#: First retry delay; doubles up to MAX_BACKOFF_S, with full jitter.
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS features_stage (
    patient_id text, metric text, start_ms bigint, end_ms bigint,
    n integer, mean double precision, min double precision, max double precision
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS risk_scores_stage (
    patient_id text, start_ms bigint, end_ms bigint, model_name text, model_version text,
    score double precision, news2_total smallint, news2_band text, inputs jsonb, contributions jsonb,
    missing_inputs text[]
) ON COMMIT DELETE ROWS;
"""

_MOVE_FEATURES = """
INSERT INTO features (patient_id, metric, window_start, window_end, n, mean, min, max)
SELECT patient_id, metric, to_timestamp(start_ms / 1000.0), to_timestamp(end_ms / 1000.0), n, mean, min, max
FROM features_stage
ON CONFLICT DO NOTHING
"""

_MOVE_SCORES = """
INSERT INTO risk_scores (patient_id, window_start, window_end, model_name, model_version, score,
                         news2_total, news2_band, inputs, contributions, missing_inputs)
SELECT patient_id, to_timestamp(start_ms / 1000.0), to_timestamp(end_ms / 1000.0), model_name, model_version,
       score, news2_total, news2_band, inputs, contributions, missing_inputs
FROM risk_scores_stage
ON CONFLICT DO NOTHING
"""


def feature_rows(windows: Sequence[WindowFeatures]) -> list[tuple[object, ...]]:
    """Flatten windows to one staging row per patient, metric and window.

    >>> from stream.events import MetricStats
    >>> feature_rows([WindowFeatures("pt-1", 0, 60_000, {"heart_rate": MetricStats(2, 71.0, 70.0, 72.0)})])
    [('pt-1', 'heart_rate', 0, 60000, 2, 71.0, 70.0, 72.0)]
    """
    return [(w.patient_id, metric, w.start_ms, w.end_ms, s.count, s.mean, s.min, s.max)
            for w in windows for metric, s in w.metrics.items()]


def score_rows(scores: Sequence[RiskScore]) -> list[tuple[object, ...]]:
    """One staging row per score; inputs and contributions as JSON text."""
    return [(s.patient_id, s.window_start_ms, s.window_end_ms, s.model_name, s.model_version, s.score,
             s.news2_total, s.news2_band, json.dumps(s.inputs), json.dumps(s.contributions),
             list(s.missing_inputs))
            for s in scores]


class TimescaleWriter:
    """An async writer holding one connection; use as ``async with TimescaleWriter(url) as w``.

    Parameters
    ----------
    url
        libpq URL of the writer role.
    connect_timeout_s
        Timeout of each connection attempt.
    retry_for_s
        How long one write keeps retrying a lost database before raising
        :class:`~sinks.errors.SinkUnavailable`; ``None`` retries for ever.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, retry_for_s: float | None = None) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.retry_for_s = retry_for_s
        self._conn: psycopg.AsyncConnection | None = None

    async def __aenter__(self) -> "TimescaleWriter":
        await self._connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def write_many(self, windows: Sequence[WindowFeatures], scores: Sequence[RiskScore]) -> int:
        """Commit ``windows`` and ``scores`` in one transaction; return the rows newly inserted."""
        features = feature_rows(windows)
        score_tuples = score_rows(scores)
        if not features and not score_tuples:
            return 0
        loop = asyncio.get_running_loop()
        deadline = None if self.retry_for_s is None else loop.time() + self.retry_for_s
        delay = FIRST_BACKOFF_S
        while True:
            try:
                conn = await self._connect()
                return await self._write(conn, features, score_tuples)
            except psycopg.OperationalError as exc:
                await self.close()
                if deadline is not None and loop.time() + delay > deadline:
                    raise SinkUnavailable(f"database unreachable for {self.retry_for_s:.0f} s: {exc}") from exc
                logger.warning("sink write failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _connect(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=max(1, int(self.connect_timeout_s)), application_name="vitalrisk-sink")
            await self._conn.execute(_STAGING)
            await self._conn.commit()
        return self._conn

    @staticmethod
    async def _write(conn: psycopg.AsyncConnection, features: list[tuple[object, ...]],
                     scores: list[tuple[object, ...]]) -> int:
        inserted = 0
        async with conn.transaction():
            async with conn.cursor() as cur:
                if features:
                    async with cur.copy("COPY features_stage FROM STDIN") as copy:
                        for row in features:
                            await copy.write_row(row)
                    await cur.execute(_MOVE_FEATURES)
                    inserted += max(cur.rowcount, 0)
                if scores:
                    async with cur.copy("COPY risk_scores_stage FROM STDIN") as copy:
                        for row in scores:
                            await copy.write_row(row)
                    await cur.execute(_MOVE_SCORES)
                    inserted += max(cur.rowcount, 0)
        return inserted
